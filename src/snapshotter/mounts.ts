/**
 * The mounts of a snapshot, as containerd's overlayfs snapshotter hands them out:
 *   no lower directory        → bind of its own fs, rw (active) or ro (view);
 *   a view over one directory → ro bind of that directory (overlay needs two lowers without upper);
 *   otherwise                 → overlay, lowerdir = the lower directories nearest first, plus
 *                               upperdir/workdir for an active snapshot.
 * Lower directories arrive already resolved (thin layers expanded, remote layers substituted) and
 * shortened to ROOT/l links; binds take the real directory.
 */
import { existsSync } from 'node:fs';
import type { Kind, Mount } from './types';

export interface LowerDir {
  /** The directory itself (for a bind). */
  readonly path: string;
  /** The short link to it (for lowerdir=). */
  readonly link: string;
}

export interface MountPlan {
  readonly kind: Exclude<Kind, 'committed'>;
  /** The snapshot's own fs (upper directory of an active snapshot). */
  readonly fs: string;
  /** The overlay work directory of an active snapshot. */
  readonly work: string;
  /** Nearest first. */
  readonly lowers: readonly LowerDir[];
  /** Add index=off (see overlayIndexOption). */
  readonly indexOff: boolean;
}

/**
 * containerd passes index=off wherever the kernel knows the option: with the index feature on, a
 * lower directory shared by several overlay mounts (every image layer) can make mounts fail.
 */
export function kernelHasOverlayIndex(): boolean {
  return existsSync('/sys/module/overlay/parameters/index');
}

export function buildMounts(p: MountPlan): Mount[] {
  if (p.lowers.length === 0) {
    return [{ type: 'bind', source: p.fs, options: [p.kind === 'active' ? 'rw' : 'ro', 'rbind'] }];
  }
  if (p.kind === 'view' && p.lowers.length === 1) {
    return [{ type: 'bind', source: p.lowers[0]!.path, options: ['ro', 'rbind'] }];
  }
  const options: string[] = [];
  if (p.indexOff) options.push('index=off');
  if (p.kind === 'active') options.push(`workdir=${p.work}`, `upperdir=${p.fs}`);
  options.push(`lowerdir=${p.lowers.map((l) => l.link).join(':')}`);
  return [{ type: 'overlay', source: 'overlay', options }];
}
