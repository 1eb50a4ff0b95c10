/**
 * The running cvmfs-ts mounts, found the way `cvmfs_config` finds cvmfs2 mounts: FUSE mounts named
 * `cvmfs2` in the mount table, asked for their repository and control socket through magic xattrs.
 * For the tools only: it reads xattrs on the mountpoints, which a mount's own daemon must never do.
 */
import { getAttribute } from '@napi-rs/xattr';
import { mountTable } from '../system/mounts';

export interface MountedInstance {
  readonly mountpoint: string;
  readonly fqrn: string;
  /** The daemon's control socket (user.talk_socket), '' when it has none. */
  readonly talkSocket: string;
}

/** A magic xattr of a mountpoint as text; undefined when it cannot be read (stale mount, not ours). */
export async function magicXattr(mountpoint: string, name: string): Promise<string | undefined> {
  try {
    return (await getAttribute(mountpoint, `user.${name}`))?.toString();
  } catch {
    return undefined;
  }
}

/** FUSE mounts whose source is cvmfs2 (the fsname cvmfs-ts mounts with, as cvmfs2 does). */
export async function cvmfsMountpoints(): Promise<string[]> {
  return (await mountTable()).filter((m) => m.fsType.startsWith('fuse') && m.source === 'cvmfs2').map((m) => m.mountpoint);
}

/** Every cvmfs-ts mount that answers (stale mounts and other cvmfs2 clients without our xattrs are left out). */
export async function mountedInstances(): Promise<MountedInstance[]> {
  const found = await Promise.all(
    (await cvmfsMountpoints()).map(async (mountpoint) => {
      const fqrn = await magicXattr(mountpoint, 'fqrn');
      return fqrn ? { mountpoint, fqrn, talkSocket: (await magicXattr(mountpoint, 'talk_socket')) ?? '' } : undefined;
    }),
  );
  return found.filter((i) => i !== undefined);
}
