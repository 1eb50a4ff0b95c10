/**
 * The FUSE edge: fuse-native callbacks → Filesystem calls. The only module that knows
 * fuse-native, and the only place where typed errors become errno values.
 *
 * Notes on the binding (measured): each call into Node costs ~50 µs, so the kernel is asked to
 * cache entries, attributes and pages (auto_cache, long timeouts); options without a
 * fuse-native name (ro, use_ino, nodev, nosuid, negative_timeout) ride along in `fsname`;
 * readdir passes stats so entries carry their type (overlayfs needs it to hide whiteouts).
 *
 * With fuse-native patched and built by scripts/build-fuse-native.sh (native/
 * fuse-native-open-flags.patch), each open sets its own direct_io/keep_cache (PageCachePolicy) so
 * handles opened before a revision update keep their bytes; otherwise libfuse's auto_cache decides.
 */
import Fuse from 'fuse-native';
import type { Filesystem, FsStat } from '../client/filesystem';
import { MisuseError } from '../client/filesystem';
import { NotDirectory } from '../client/catalog-tree';
import { CvmfsError } from '../errors';
import { isMountpoint } from '../system/mounts';
import { PageCachePolicy, PastEndOrdering } from './page-cache-policy';

export interface FuseMountOptions {
  mountpoint: string;
  kcacheTimeoutS: number;
  checkPermissions: boolean;
  /** Called with every error answered as EIO, for the log. */
  onIoError: (op: string, path: string, error: unknown) => void;
  /** Per operation, told about every answered call (metrics, debug log); none = not even timed. */
  observe?: FuseObserver;
}

/** The operations answered through `answer` (fgetattr counts as getattr), as named in metrics. */
export const FUSE_OPS = ['getattr', 'access', 'readdir', 'readlink', 'open', 'read', 'release', 'getxattr', 'listxattr', 'statfs'] as const;
export type FuseOp = (typeof FUSE_OPS)[number];
/**
 * `startedMs` is performance.now() when the call reached us, `errno` 0 or the negative errno
 * answered. Runs on every call of the hot path: it must not allocate or block.
 */
export type FuseOpRecorder = (startedMs: number, errno: number, path: string) => void;
export type FuseObserver = Readonly<Record<FuseOp, FuseOpRecorder>>;

const E = {
  ENOENT: -2,
  EIO: -5,
  EBADF: -9,
  EEXIST: -17,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  EROFS: -30,
  ERANGE: -34,
  ENODATA: -61,
} as const;

const MISUSE_ERRNO: Record<MisuseError['kind'], number> = {
  'read-only': E.EROFS,
  'not-a-directory': E.ENOTDIR,
  'not-a-symlink': E.EINVAL,
  'not-a-file': E.EISDIR,
  exists: E.EEXIST,
  'bad-handle': E.EBADF,
};

/** Maps a failure to a negative errno; anything unexpected is EIO. */
export function errnoOf(e: unknown): number {
  if (e instanceof MisuseError) return MISUSE_ERRNO[e.kind];
  if (e instanceof NotDirectory) return E.ENOTDIR;
  if (CvmfsError.is(e, 'E_NOT_FOUND')) return E.ENOENT;
  return E.EIO;
}

type Callback = (code: number, ...results: unknown[]) => void;

type Signal = (code: number, buffer: ArrayBufferLike) => void;
interface XattrOps {
  getxattr(path: string, name: string, position: number, cb: (err: number, value?: Buffer) => void): void;
  listxattr(path: string, cb: (err: number, list?: string[]) => void): void;
}

/**
 * fuse-native copies xattr values and lists into the kernel's buffer without checking its size:
 * a list longer than the buffer throws inside the binding and kills the daemon (Python's
 * os.listxattr starts with 256 bytes), a long value is silently cut. Answer like the kernel
 * expects instead: size queries get the size, a buffer too small gets ERANGE.
 */
function fixXattrBufferHandling(): void {
  const proto = Fuse.prototype as unknown as {
    ops: XattrOps;
    _op_getxattr(this: { ops: XattrOps }, signal: Signal, path: string, name: string, buf: Buffer, position: number): void;
    _op_listxattr(this: { ops: XattrOps }, signal: Signal, path: string, buf: Buffer): void;
  };
  const reply = (signal: Signal, buf: Buffer, data: Buffer) => {
    if (buf.length === 0) return signal(data.length, buf.buffer);
    if (data.length > buf.length) return signal(E.ERANGE, buf.buffer);
    data.copy(buf);
    return signal(data.length, buf.buffer);
  };
  proto._op_getxattr = function (signal, path, name, buf, position) {
    this.ops.getxattr(path, name, position, (err, value) => {
      if (err) return signal(err, buf.buffer);
      if (!value) return signal(E.ENODATA, buf.buffer);
      return reply(signal, buf, value);
    });
  };
  proto._op_listxattr = function (signal, path, buf) {
    this.ops.listxattr(path, (err, list) => {
      if (err || !list) return signal(err || E.EIO, buf.buffer);
      return reply(signal, buf, Buffer.concat(list.map((n) => Buffer.from(`${n}\0`))));
    });
  };
}
fixXattrBufferHandling();

/**
 * fuse-native unmounts with `fusermount -uz` and releases its event-loop handle only when that
 * succeeds. After an external umount(8) or `fusermount -u` it fails (EINVAL) and the daemon would
 * never exit: a mountpoint that is no longer mounted counts as unmounted.
 */
function fixUnmountOfUnmounted(): void {
  const F = Fuse as unknown as { unmount(mnt: string, cb: (err: Error | null) => void): void };
  const unmount = F.unmount.bind(Fuse);
  F.unmount = (mnt, cb) =>
    unmount(mnt, (err) => {
      if (!err) return cb(null);
      // Reads /proc/self/mountinfo (asynchronously): never touches the mountpoint, our own mount.
      isMountpoint(mnt).then(
        (mounted) => cb(mounted ? err : null),
        () => cb(err),
      );
    });
}
fixUnmountOfUnmounted();

/** The fuse-native stat object (times as Date; fuse-native carries milliseconds). */
function fuseStat(s: FsStat) {
  return s;
}

/** The open flag bits of the patched binding; undefined when the loaded binary lacks the patch. */
function openFlagBits(): { directIo: number; keepCache: number } | undefined {
  const { OPEN_DIRECT_IO: directIo, OPEN_KEEP_CACHE: keepCache } = Fuse;
  return typeof directIo === 'number' && typeof keepCache === 'number' ? { directIo, keepCache } : undefined;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const isRegular = (s: FsStat) => (s.mode & S_IFMT) === S_IFREG;

/** The kernel's attribute timeout for `entry/attr_timeout=kcache` (0 is not passed on: libfuse's 1 s). */
const attrTimeoutMs = (kcacheS: number) => (kcacheS > 0 ? kcacheS : 1) * 1000;

export class FuseAdapter {
  private fuse: Fuse | undefined;
  /** Per-open page-cache decisions; undefined = unpatched binding, libfuse's auto_cache decides. */
  private readonly pageCache: { policy: PageCachePolicy; bits: { directIo: number; keepCache: number } } | undefined;
  private readonly pastEnd = new PastEndOrdering();

  constructor(
    private readonly fs: Filesystem,
    private readonly o: FuseMountOptions,
  ) {
    const bits = openFlagBits();
    this.pageCache = bits && { policy: new PageCachePolicy({ attrTimeoutMs: attrTimeoutMs(o.kcacheTimeoutS) }), bits };
  }

  /** Whether each open sets its own direct_io/keep_cache (the patched fuse-native is loaded). */
  get perOpenCacheFlags(): boolean {
    return this.pageCache !== undefined;
  }

  /** Attributes of `path` as the kernel's one inode for it must see them (see PageCachePolicy). */
  private async attributes(path: string): Promise<FsStat> {
    const s = await this.fs.getattr(path);
    if (!this.pageCache || !isRegular(s)) return s;
    const size = this.pageCache.policy.reportedSize(path, s.size);
    return size === s.size ? s : { ...s, size, blocks: 1 + Math.floor(size / 512) };
  }

  /**
   * getattr with a handle (the kernel sends one after lseek(SEEK_END) or a read past i_size): the
   * path's attributes, not the handle's own size. The kernel keeps one size per path, and a
   * smaller one from a new handle would cut the reads of an old handle short (measured). Only when
   * the path no longer names a regular file do we answer with the entry the handle opened.
   */
  private async handleAttributes(path: string, handle: number): Promise<FsStat> {
    try {
      const s = await this.attributes(path);
      if (isRegular(s)) return s;
    } catch (e) {
      if (errnoOf(e) === E.EIO) throw e;
    }
    const own = this.fs.handleStat(handle);
    const size = this.pageCache ? this.pageCache.policy.reportedSize(path, own.size) : own.size;
    return { ...own, size, blocks: 1 + Math.floor(size / 512) };
  }

  private async open(path: string, flags: number): Promise<{ handle: number; openFlags: number | undefined }> {
    const handle = await this.fs.open(path, flags);
    if (!this.pageCache) return { handle, openFlags: undefined };
    const { policy, bits } = this.pageCache;
    const d = policy.open(path, handle, this.fs.handleContent(handle), Date.now());
    return { handle, openFlags: (d.directIo ? bits.directIo : 0) | (d.keepCache ? bits.keepCache : 0) };
  }

  private read(handle: number, buffer: Buffer, length: number, position: number): Promise<number> {
    const read = () => this.fs.read(handle, buffer, length, position);
    if (!this.pageCache?.policy.isPageCached(handle)) return read();
    const size = this.fs.handleContent(handle).size;
    if (position + length <= size) return read(); // a full read: moves no i_size
    // Past the handle's end: only when the kernel's size is larger than this handle's object.
    if (position > size) return this.pastEnd.pastEnd(handle).then(() => 0);
    return this.pastEnd.acrossEnd(handle, read);
  }

  private release(handle: number): Promise<void> {
    this.pageCache?.policy.release(handle, Date.now());
    return this.fs.release(handle);
  }

  /** Runs an async operation and answers the kernel once, mapping failures to errno. */
  private answer<T>(op: FuseOp, path: string, cb: Callback, run: () => Promise<T> | T, reply: (value: T) => void): void {
    const record = this.o.observe?.[op];
    const started = record ? performance.now() : 0;
    let result: Promise<T>;
    try {
      result = Promise.resolve(run());
    } catch (e) {
      result = Promise.reject(e);
    }
    const replied = record
      ? (value: T) => {
          record(started, 0, path);
          reply(value);
        }
      : reply;
    result.then(replied, (e: unknown) => {
      const errno = errnoOf(e);
      if (errno === E.EIO) this.o.onIoError(op, path, e);
      record?.(started, errno, path);
      cb(errno);
    });
  }

  private ops() {
    const fs = this.fs;
    const readOnly = (...args: unknown[]) => (args[args.length - 1] as Callback)(E.EROFS);
    return {
      init: (cb: Callback) => cb(0),
      getattr: (path: string, cb: Callback) => this.answer('getattr', path, cb, () => this.attributes(path), (s) => cb(0, fuseStat(s))),
      fgetattr: (path: string, fd: number, cb: Callback) =>
        this.answer('getattr', path, cb, () => this.handleAttributes(path, fd), (s) => cb(0, fuseStat(s))),
      access: (path: string, _mode: number, cb: Callback) => this.answer('access', path, cb, () => fs.getattr(path), () => cb(0)),
      readdir: (path: string, cb: Callback) =>
        this.answer('readdir', path, cb, () => fs.readdir(path), (d) => cb(0, d.names, d.stats.map(fuseStat))),
      readlink: (path: string, cb: Callback) => this.answer('readlink', path, cb, () => fs.readlink(path), (t) => cb(0, t)),
      open: (path: string, flags: number, cb: Callback) =>
        this.answer('open', path, cb, () => this.open(path, flags), (o) => (o.openFlags === undefined ? cb(0, o.handle) : cb(0, o.handle, o.openFlags))),
      read: (path: string, fd: number, buffer: Buffer, length: number, position: number, cb: (n: number) => void) =>
        this.answer('read', path, cb, () => this.read(fd, buffer, length, position), (n) => cb(n)),
      release: (path: string, fd: number, cb: Callback) => this.answer('release', path, cb, () => this.release(fd), () => cb(0)),
      getxattr: (path: string, name: string, _position: number, cb: Callback) =>
        this.answer('getxattr', path, cb, () => fs.getxattr(path, name), (v) => (v ? cb(0, v) : cb(E.ENODATA))),
      listxattr: (path: string, cb: Callback) => this.answer('listxattr', path, cb, () => fs.listxattr(path), (l) => cb(0, l)),
      statfs: (path: string, cb: Callback) => this.answer('statfs', path, cb, () => fs.statfs(), (s) => cb(0, s)),
      write: readOnly,
      create: readOnly,
      unlink: readOnly,
      rename: readOnly,
      mkdir: readOnly,
      rmdir: readOnly,
      symlink: readOnly,
      link: readOnly,
      chmod: readOnly,
      chown: readOnly,
      truncate: readOnly,
      ftruncate: readOnly,
      utimens: readOnly,
      setxattr: readOnly,
      removexattr: readOnly,
      mknod: readOnly,
    };
  }

  mount(): Promise<void> {
    const kcache = this.o.kcacheTimeoutS;
    const hidden = ['ro', 'use_ino', 'nodev', 'nosuid', `negative_timeout=${kcache}`];
    this.fuse = new Fuse(this.o.mountpoint, this.ops() as unknown as Fuse.Operations, {
      force: true, // take over a stale mount of the same mountpoint
      mkdir: false,
      allowOther: true,
      defaultPermissions: this.o.checkPermissions,
      // Unpatched binding: keep file pages across opens unless a file's mtime or size changed (after
      // a revision update the same path may name new content; kernel_cache would keep the old
      // pages). Patched: each open decides (auto_cache could only add keep_cache to our decision).
      autoCache: this.pageCache === undefined,
      entryTimeout: kcache,
      attrTimeout: kcache,
      maxRead: 1 << 17,
      fsname: ['cvmfs2', ...hidden].join(','),
      subtype: 'cvmfs-ts',
      timeout: false, // our downloads have their own timeouts; no timer per operation
    });
    return new Promise((resolve, reject) => this.fuse!.mount((err: Error | null) => (err ? reject(err) : resolve())));
  }

  unmount(): Promise<void> {
    const fuse = this.fuse;
    if (!fuse) return Promise.resolve();
    return new Promise((resolve) => fuse.unmount(() => resolve()));
  }
}
