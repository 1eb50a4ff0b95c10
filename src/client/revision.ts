/**
 * The mounted revision and its replacement (§5.11). When the root catalog's TTL runs out, the
 * manifest is checked again (fully verified, as at mount time); a newer revision is loaded into a
 * fresh catalog tree whose inodes continue after the old ones (the kernel may still hold those),
 * and swapped in for new lookups. Open files keep what they resolved when they were opened.
 * A failed check is retried after min(TTL, 180 s); a fixed root hash or CVMFS_AUTO_UPDATE=no
 * never updates.
 */
import type { ContentHash } from '../format/hash';
import type { Manifest } from '../format/manifest';
import { CatalogTree, type CatalogLoader } from './catalog-tree';
import type { BootstrapResult } from './bootstrap';
import type { Logger } from './log';
import { describeError } from '../errors';

const DEFAULT_TTL_S = 240;
const RETRY_AFTER_FAILURE_S = 180;

export interface MountedRevision {
  readonly tree: CatalogTree;
  readonly rootHash: ContentHash;
  readonly revision: number;
  readonly manifest: Manifest | undefined;
  readonly ttlS: number;
  readonly loadedAt: Date;
}

export interface RevisionSourceOptions {
  load: CatalogLoader;
  /** CVMFS_MAX_TTL in minutes (0 = none). */
  maxTtlMinutes: number;
}

/** Loads the catalog tree of a revision; inode numbers start after `inodeBase`. */
export async function loadRevision(boot: BootstrapResult, o: RevisionSourceOptions, inodeBase?: number): Promise<MountedRevision> {
  const tree = await CatalogTree.create(boot.rootHash, o.load, boot.manifest?.rootCatalogSize ?? 0, inodeBase);
  const ttl = Number(tree.root.db.properties().get('TTL') ?? boot.manifest?.ttl ?? DEFAULT_TTL_S);
  return {
    tree,
    rootHash: boot.rootHash,
    revision: tree.root.db.revision(),
    manifest: boot.manifest,
    ttlS: Math.min(ttl, o.maxTtlMinutes > 0 ? o.maxTtlMinutes * 60 : Infinity),
    loadedAt: new Date(),
  };
}

export interface RevisionUpdaterOptions extends RevisionSourceOptions {
  /** Fetches and verifies the current manifest (bootstrap without the offline fallback). */
  check(): Promise<BootstrapResult>;
  /** Called with the new revision once it is loaded; the caller swaps it in. */
  apply(next: MountedRevision, previous: MountedRevision): Promise<void>;
  log: Logger;
}

export class RevisionUpdater {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<'updated' | 'current' | 'failed'> | undefined;
  private stopped = false;
  /** Timer-driven checks run only after start(); a check asked for (talk `remount`) re-arms nothing. */
  private started = false;

  constructor(
    private current: MountedRevision,
    private readonly o: RevisionUpdaterOptions,
  ) {}

  get mounted(): MountedRevision {
    return this.current;
  }

  /** When the current revision's TTL runs out. */
  get expiresAt(): Date {
    return new Date(this.current.loadedAt.getTime() + this.current.ttlS * 1000);
  }

  start(): void {
    this.started = true;
    this.schedule(this.current.ttlS);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(seconds: number): void {
    if (this.stopped || !this.started) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.checkNow(), Math.max(seconds, 1) * 1000);
    this.timer.unref();
  }

  /** Checks for a newer revision now (also `remount`); concurrent calls share one check. */
  checkNow(): Promise<'updated' | 'current' | 'failed'> {
    this.running ??= this.update().finally(() => (this.running = undefined));
    return this.running;
  }

  private async update(): Promise<'updated' | 'current' | 'failed'> {
    try {
      const boot = await this.o.check();
      if (boot.offline) throw new Error('servers unreachable');
      if (boot.rootHash.equals(this.current.rootHash)) {
        this.current = { ...this.current, loadedAt: new Date() };
        this.o.log.debug(`revision ${this.current.revision} is current; next check in ${this.current.ttlS} s`);
        this.schedule(this.current.ttlS);
        return 'current';
      }
      const previous = this.current;
      const next = await loadRevision(boot, this.o, previous.tree.inodeCeiling);
      await this.o.apply(next, previous);
      this.current = next;
      this.o.log.info(`revision ${previous.revision} → ${next.revision} (root catalog ${next.rootHash})`);
      this.schedule(next.ttlS);
      return 'updated';
    } catch (e) {
      const retry = Math.min(this.current.ttlS, RETRY_AFTER_FAILURE_S);
      this.o.log.warn(`revision check failed (${describeError(e)}); next try in ${retry} s`);
      this.schedule(retry);
      return 'failed';
    }
  }
}
