/**
 * Unpacks one image layer (a tar, plain or gzip/zstd by magic bytes) into a directory, as root, keeping
 * what an overlay lower dir needs (§8.2): owners, modes (setuid etc. applied after chown, which clears
 * them), mtimes (directories last, after their content changed them), xattrs from PAX records,
 * hardlinks within the layer, devices and FIFOs. OCI whiteouts become overlayfs-native:
 *
 *   .wh.<name>      → a character device 0:0 named <name> (no `.wh.` file is left)
 *   .wh..wh..opq    → xattr `trusted.overlay.opaque=y` on its directory (no file is left)
 *
 * A whiteout only hides content of lower layers (image-spec "Whiteouts"): if this layer itself has the
 * name, the layer's own entry wins whatever the order. `trusted.overlay.*` xattrs inside the tar are
 * dropped: only whiteout members may make a directory opaque or hide a name.
 *
 * Safety: a member name that is absolute, has a `..` component, or leads through a symlink or a
 * non-directory is refused with a SourceError naming the member; so is a hardlink to a path outside
 * the members already unpacked. Nothing is written outside `destDir`.
 *
 * Node has no mknod(2): device nodes, FIFOs and whiteouts are queued and made in batches by GNU tar
 * (one process per batch, see runTar), before anything touches their paths again and before the final
 * pass that sets node and directory metadata.
 *
 * The caller should unpack into a fresh directory and keep it only when the promise resolves: the
 * input's verification (digest) error arrives at its end, after content has been written.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { lstat, mkdir, open, rm, symlink, link, lchown, chmod, lutimes } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { setAttribute } from '@napi-rs/xattr';
import { CvmfsError, SourceError } from '../errors';
import type { Digest } from './digest';
import { decompressed, type Compression } from './decompress';
import { readTar, type TarHeader } from './tar-reader';
import { buildTar } from './tar-writer';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';

export interface UnpackOptions {
  /** The layer's media type; informational only, compression is detected from the bytes. */
  readonly mediaType?: string;
  /** Names the layer in errors (e.g. its digest). */
  readonly what?: string;
}

export interface UnpackStats {
  /** Members created: files, hardlinks, directories, symlinks, devices, FIFOs, whiteout devices. */
  readonly entries: number;
  /** Regular files and hardlinks. */
  readonly files: number;
  /** Bytes of regular file content written. */
  readonly fileBytes: number;
  /** Length of the uncompressed tar stream (DUCC's `diff-size`). */
  readonly bytes: number;
  /** sha256 of the uncompressed tar stream: the layer's diff_id. */
  readonly uncompressedDigest: Digest;
  readonly compression: Compression;
  /** `.wh.<name>` members turned into 0:0 character devices. */
  readonly whiteouts: number;
  /** Directories marked opaque. */
  readonly opaqueDirs: number;
  /** Members not unpacked: unsupported tar types, whiteouts of names this layer itself has. */
  readonly skipped: number;
}

interface NodeJob {
  readonly path: string;
  /** Relative to the layer root, for tar. */
  readonly rel: string;
  readonly kind: 'c' | 'b' | 'p';
  readonly major: number;
  readonly minor: number;
}

interface Meta {
  readonly path: string;
  readonly rel: string;
  readonly uid: number;
  readonly gid: number;
  /** Undefined for symlinks, whose mode Linux ignores. */
  readonly mode?: number;
  readonly mtime: number;
}

type Kind = 'dir' | 'file' | 'symlink' | 'node';

/** Nodes per `tar` run: bounds the archive held in memory (about 1 KiB per node). */
const NODE_BATCH = 8192;

/**
 * Makes device nodes and FIFOs with one GNU tar per batch: tar calls mknod(2) itself, so a thousand
 * whiteouts cost one process instead of a thousand `mknod` runs (≈10 ms each here). The archive holds
 * only names already checked (no `..`, parents are real directories).
 */
function runTar(root: string, nodes: readonly NodeJob[]): Promise<void> {
  const archive = buildTar(
    nodes.map((n) => ({
      name: n.rel,
      type: n.kind === 'p' ? 'fifo' : n.kind === 'c' ? 'character-device' : 'block-device',
      mode: 0o600,
      devmajor: n.major,
      devminor: n.minor,
    })),
  );
  return new Promise((resolvePromise, reject) => {
    const child = execFile('tar', ['-x', '-f', '-', '-C', root, '--numeric-owner'], { maxBuffer: 1 << 20 }, (err, _stdout, stderr) => {
      if (err) reject(new CvmfsError('E_IO', `making device nodes with tar failed: ${String(stderr).trim() || err.message}`, { cause: err }));
      else resolvePromise();
    });
    child.stdin?.on('error', () => {
      // tar exited early; its exit status reports why.
    });
    child.stdin?.end(archive);
  });
}

function errno(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}

/** Member name → path components relative to the layer root; refuses absolute names and `..`. */
function components(name: string, member: string, what: string): string[] {
  if (name.startsWith('/')) throw new SourceError(member, `${what}: absolute member name`);
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new SourceError(member, `${what}: member name with '..'`);
  return parts;
}

class Unpacker {
  private readonly root: string;
  /** Directories known to be real directories (not symlinks) under root, by relative path. */
  private readonly dirs = new Set<string>(['']);
  /** What this layer created, by relative path: hardlink targets must be here. */
  private readonly created = new Map<string, Kind>();
  private readonly pendingNodes = new Map<string, NodeJob>();
  private readonly nodeMeta: Meta[] = [];
  /** Xattrs of queued nodes, set in the final pass once the nodes exist. */
  private readonly nodeXattrs = new Map<string, TarHeader>();
  private readonly dirMeta = new Map<string, Meta>();
  readonly stats = { entries: 0, files: 0, fileBytes: 0, whiteouts: 0, opaqueDirs: 0, skipped: 0 };

  constructor(
    destDir: string,
    private readonly what: string,
  ) {
    this.root = resolve(destDir);
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  /**
   * Makes sure every ancestor of `parts` is a real directory (creating missing ones with 0755 when
   * `create`), so that nothing is reached through a symlink.
   */
  private async ensureParents(parts: string[], member: string, create: boolean): Promise<void> {
    let rel = '';
    for (let i = 0; i < parts.length - 1; i++) {
      rel = rel === '' ? parts[i] : `${rel}/${parts[i]}`;
      if (this.dirs.has(rel)) continue;
      if (this.pendingNodes.has(rel)) throw new SourceError(member, `${this.what}: ${rel} is not a directory`);
      let st;
      try {
        st = await lstat(this.abs(rel));
      } catch (e) {
        if (errno(e) !== 'ENOENT' || !create) throw new SourceError(member, `${this.what}: ${rel} does not exist`, { cause: e });
        await mkdir(this.abs(rel), { mode: 0o755 });
        this.created.set(rel, 'dir');
        this.dirs.add(rel);
        continue;
      }
      if (st.isSymbolicLink()) throw new SourceError(member, `${this.what}: path leads through the symlink ${rel}`);
      if (!st.isDirectory()) throw new SourceError(member, `${this.what}: ${rel} is not a directory`);
      this.dirs.add(rel);
    }
  }

  /** Removes what is at `rel` (a later member replaces an earlier one, as tar does). Keeps directories when `keepDir`. */
  private async clear(rel: string, keepDir: boolean): Promise<'kept-dir' | 'empty'> {
    if (this.pendingNodes.has(rel)) await this.flushNodes();
    let st;
    try {
      st = await lstat(this.abs(rel));
    } catch (e) {
      if (errno(e) === 'ENOENT') return 'empty';
      throw e;
    }
    if (st.isDirectory() && keepDir) return 'kept-dir';
    // Queued nodes below must be made (and then removed) now, not later under whatever replaces it.
    if (st.isDirectory() && this.pendingNodes.size > 0) await this.flushNodes();
    await rm(this.abs(rel), { recursive: true, force: true });
    this.created.delete(rel);
    if (this.dirs.has(rel)) {
      for (const d of [...this.dirs]) if (d === rel || d.startsWith(`${rel}/`)) this.dirs.delete(d);
      for (const d of [...this.dirMeta.keys()]) if (d === rel || d.startsWith(`${rel}/`)) this.dirMeta.delete(d);
      for (const c of [...this.created.keys()]) if (c.startsWith(`${rel}/`)) this.created.delete(c);
    }
    return 'empty';
  }

  private async setXattrs(path: string, h: TarHeader): Promise<void> {
    for (const [name, value] of h.xattrs) {
      if (name.startsWith('trusted.overlay.')) continue; // see the module comment
      try {
        await setAttribute(path, name, value);
      } catch (e) {
        throw new CvmfsError('E_IO', `${this.what}: ${h.name}: cannot set xattr ${name}: ${(e as Error).message}`, { cause: e });
      }
    }
  }

  async entry(h: TarHeader, body: () => AsyncGenerator<Buffer, void, undefined>): Promise<void> {
    const parts = components(h.name, h.name, this.what);
    const base = parts.length > 0 ? parts[parts.length - 1] : '';
    if (base.startsWith(WHITEOUT_PREFIX)) {
      await this.whiteout(parts, h);
      return;
    }
    const rel = parts.join('/');
    if (rel === '') {
      // The layer's root ("./"): its metadata applies to destDir.
      if (h.type === 'directory') this.dirMeta.set('', { path: this.root, rel: '', uid: h.uid, gid: h.gid, mode: h.mode, mtime: h.mtime });
      else this.stats.skipped++;
      return;
    }
    await this.ensureParents(parts, h.name, true);
    const path = this.abs(rel);
    switch (h.type) {
      case 'directory': {
        if ((await this.clear(rel, true)) === 'empty') await mkdir(path, { mode: 0o700 });
        this.dirs.add(rel);
        this.created.set(rel, 'dir');
        await this.setXattrs(path, h);
        this.dirMeta.set(rel, { path, rel, uid: h.uid, gid: h.gid, mode: h.mode, mtime: h.mtime });
        break;
      }
      case 'file': {
        await this.clear(rel, false);
        const fh = await open(path, 'wx', 0o600);
        try {
          for await (const chunk of body()) {
            await fh.write(chunk);
            this.stats.fileBytes += chunk.length;
          }
          await fh.chown(h.uid, h.gid);
          await fh.chmod(h.mode);
        } finally {
          await fh.close();
        }
        // After chown: chown clears security.capability.
        await this.setXattrs(path, h);
        await lutimes(path, h.mtime, h.mtime);
        this.created.set(rel, 'file');
        this.stats.files++;
        break;
      }
      case 'symlink': {
        await this.clear(rel, false);
        await symlink(h.linkname, path);
        await lchown(path, h.uid, h.gid);
        await this.setXattrs(path, h);
        await lutimes(path, h.mtime, h.mtime);
        this.created.set(rel, 'symlink');
        break;
      }
      case 'link': {
        const targetParts = components(h.linkname, h.name, this.what);
        const target = targetParts.join('/');
        const kind = this.created.get(target);
        if (kind === undefined || kind === 'dir') {
          throw new SourceError(h.name, `${this.what}: hardlink target ${JSON.stringify(h.linkname)} is not a file of this layer`);
        }
        await this.ensureParents(targetParts, h.name, false);
        if (this.pendingNodes.has(target)) await this.flushNodes();
        if (target === rel) break; // a link to itself: nothing to do
        await this.clear(rel, false);
        await link(this.abs(target), path);
        this.created.set(rel, kind);
        this.stats.files++;
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        await this.clear(rel, false);
        const kind = h.type === 'fifo' ? 'p' : h.type === 'character-device' ? 'c' : 'b';
        this.queueNode({ path, rel, kind, major: h.devmajor, minor: h.devminor }, rel, h);
        break;
      }
      default:
        this.stats.skipped++;
        return;
    }
    this.stats.entries++;
  }

  private queueNode(job: NodeJob, rel: string, h: TarHeader, mode = h.mode): void {
    this.pendingNodes.set(rel, job);
    this.created.set(rel, 'node');
    this.nodeMeta.push({ path: job.path, rel, uid: h.uid, gid: h.gid, mode, mtime: h.mtime });
    if (h.xattrs.size > 0) this.nodeXattrs.set(rel, h);
  }

  private async whiteout(parts: string[], h: TarHeader): Promise<void> {
    const base = parts[parts.length - 1];
    const dirParts = parts.slice(0, -1);
    const dirRel = dirParts.join('/');
    // Parents of a whiteout must exist as directories too (an opaque marker creates its directory).
    await this.ensureParents([...dirParts, base], h.name, true);
    if (base === OPAQUE_MARKER) {
      try {
        await setAttribute(this.abs(dirRel), OVERLAY_OPAQUE_XATTR, 'y');
      } catch (e) {
        throw new CvmfsError('E_IO', `${this.what}: ${h.name}: cannot set ${OVERLAY_OPAQUE_XATTR}: ${(e as Error).message}`, { cause: e });
      }
      this.stats.opaqueDirs++;
      return;
    }
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..' || name.startsWith(WHITEOUT_PREFIX)) {
      throw new SourceError(h.name, `${this.what}: invalid whiteout name`);
    }
    const rel = dirRel === '' ? name : `${dirRel}/${name}`;
    if (this.created.has(rel)) {
      // The layer has the name itself: a whiteout hides lower layers only.
      this.stats.skipped++;
      return;
    }
    // Mode 0 as overlayfs and containerd make whiteouts; owner and mtime from the member.
    this.queueNode({ path: this.abs(rel), rel, kind: 'c', major: 0, minor: 0 }, rel, { ...h, xattrs: new Map() }, 0);
    this.created.set(rel, 'node');
    this.stats.whiteouts++;
    this.stats.entries++;
  }

  /** Makes the queued device nodes, FIFOs and whiteouts. */
  async flushNodes(): Promise<void> {
    const jobs = [...this.pendingNodes.values()];
    this.pendingNodes.clear();
    for (let i = 0; i < jobs.length; i += NODE_BATCH) await runTar(this.root, jobs.slice(i, i + NODE_BATCH));
  }

  /** Final pass: nodes' metadata, then directories deepest first (their mtimes change until then). */
  async finish(): Promise<void> {
    await this.flushNodes();
    for (const m of this.nodeMeta) {
      if (this.created.get(m.rel) !== 'node') continue; // replaced by a later member
      await lchown(m.path, m.uid, m.gid);
      if (m.mode !== undefined) await chmod(m.path, m.mode);
      const h = this.nodeXattrs.get(m.rel);
      if (h) await this.setXattrs(m.path, h);
      await lutimes(m.path, m.mtime, m.mtime);
    }
    const dirs = [...this.dirMeta.values()].sort((a, b) => depth(b.rel) - depth(a.rel));
    for (const m of dirs) {
      await lchown(m.path, m.uid, m.gid);
      if (m.mode !== undefined) await chmod(m.path, m.mode);
      await lutimes(m.path, m.mtime, m.mtime);
    }
  }
}

function depth(rel: string): number {
  return rel === '' ? 0 : rel.split('/').length;
}

/**
 * Unpacks the layer `stream` into `destDir` (created if missing; should be empty). Resolves with the
 * layer's statistics after the whole input, including its verification at the end, has succeeded.
 */
export async function unpackLayer(stream: Readable, destDir: string, options: UnpackOptions = {}): Promise<UnpackStats> {
  const what = options.what ?? 'layer';
  await mkdir(destDir, { recursive: true });
  const { stream: tar, compression } = await decompressed(stream);
  const hash = createHash('sha256');
  let bytes = 0;
  const u = new Unpacker(destDir, what);
  try {
    const entries = readTar(tar, {
      what,
      onChunk: (c) => {
        hash.update(c);
        bytes += c.length;
      },
    });
    for await (const e of entries) await u.entry(e.header, e.body);
    await u.finish();
  } catch (e) {
    tar.destroy();
    throw e;
  }
  return { ...u.stats, bytes, uncompressedDigest: `sha256:${hash.digest('hex')}`, compression };
}
