/**
 * The snapshotter's own vocabulary, independent of gRPC: what a snapshot is and what a mount is.
 * The gRPC edge (grpc-server.ts) converts these to and from containerd's protobuf messages.
 */

/** containerd's snapshot kinds; a view and an active snapshot can be mounted, a committed one is a parent. */
export type Kind = 'view' | 'active' | 'committed';

export type Labels = Record<string, string>;

/** What containerd's `snapshots.Info` carries. Times are microseconds since the epoch. */
export interface SnapshotInfo {
  readonly name: string;
  /** The parent's name, '' for none. */
  readonly parent: string;
  readonly kind: Kind;
  readonly createdUs: number;
  readonly updatedUs: number;
  readonly labels: Labels;
}

/** A mount as containerd performs it: `mount -t type -o options source <target>`. */
export interface Mount {
  readonly type: string;
  readonly source: string;
  readonly options: readonly string[];
}

export interface Usage {
  /** Bytes of disk used (st_blocks * 512 of each distinct inode), like containerd's fs.DiskUsage. */
  readonly size: number;
  readonly inodes: number;
}
