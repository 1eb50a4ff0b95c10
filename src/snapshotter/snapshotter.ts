/**
 * The snapshotter service: containerd's overlayfs snapshotter semantics over a metadata store and
 * ROOT/snapshots/<id>/{fs,work}, plus the CVMFS parts — thin layers expand into CVMFS layer
 * directories, and layers that a repository already holds become committed snapshots without a
 * download. The composition root of the `snapshotter` process; knows nothing of gRPC.
 *
 *   ROOT/metadata.db          the snapshot table (store.ts)
 *   ROOT/snapshots/<id>/fs    a snapshot's content (upper directory while active)
 *   ROOT/snapshots/<id>/work  overlay work directory of an active snapshot
 *   ROOT/l/<name>             short links to lower directories (links.ts)
 */
import { mkdirSync, renameSync, rmSync, existsSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { SnapshotStore, cleanLabels, type SnapshotRecord } from './store';
import { ShortLinks } from './links';
import { buildMounts, kernelHasOverlayIndex, type LowerDir } from './mounts';
import { Repositories, type MountStarter } from './repositories';
import { findRemoteLayer, remoteLayerRequest, TARGET_LABEL } from './remote';
import { readThinJson, thinLayerDirectories } from './thin';
import { diskUsage } from './usage';
import { compileFilters } from './filters';
import { alreadyExists, invalid, precondition } from './errors';
import type { Kind, Labels, Mount, SnapshotInfo, Usage } from './types';
import { describeError } from '../errors';
import { layerDirectory, parseThinJson } from '../image/thin-json';
import { warmUpThinImage } from '../thin/warm-up';

export interface SnapshotterOptions {
  /** Where the metadata and the snapshot directories live. */
  readonly root: string;
  /** Where CVMFS repositories are mounted (default /cvmfs). */
  readonly cvmfsRoot?: string;
  /** Repositories searched for remote layers, in order. */
  readonly repositories?: readonly string[];
  /** Mounts a repository that is needed but not mounted. */
  readonly startRepository: MountStarter;
  /** Overrides the kernel check for overlay's index option (tests). */
  readonly indexOff?: boolean;
  readonly log?: (line: string) => void;
  /** Told what happens, for metrics. */
  readonly events?: SnapshotterEvents;
}

/** What the snapshotter reports as it works (metrics); synchronous, so cheap and never throwing. */
export interface SnapshotterEvents {
  /** A Prepare asked about a layer: `found` when a repository holds it (no download, no unpack). */
  remoteLayer(found: boolean): void;
  /** Mounts were built for an active or view snapshot; `thin` when thin image layers are among the lowers. */
  mounted(kind: 'active' | 'view', thin: boolean): void;
  /** A committed layer turned out to be a thin image layer. */
  thinCommitted(): void;
}

function toInfo(r: SnapshotRecord): SnapshotInfo {
  return { name: r.name, parent: r.parent, kind: r.kind, createdUs: r.createdUs, updatedUs: r.updatedUs, labels: r.labels };
}

export class Snapshotter {
  private readonly snapshotsDir: string;
  private readonly links: ShortLinks;
  /**
   * Cleanup prunes links against the records it read; a Mounts call that links new lower
   * directories meanwhile would lose them (seen: containerd's GC ran Cleanup while the next
   * container was being prepared → overlay ENOENT). Both take turns on this chain.
   */
  private linkTurn: Promise<unknown> = Promise.resolve();
  private readonly repos: Repositories;
  private readonly indexOff: boolean;
  private readonly log: (line: string) => void;

  private constructor(
    private readonly o: SnapshotterOptions,
    private readonly store: SnapshotStore,
  ) {
    this.snapshotsDir = join(o.root, 'snapshots');
    this.links = new ShortLinks(join(o.root, 'l'));
    this.repos = new Repositories(o.cvmfsRoot ?? '/cvmfs', o.startRepository);
    this.indexOff = o.indexOff ?? kernelHasOverlayIndex();
    this.log = o.log ?? (() => undefined);
  }

  static async open(o: SnapshotterOptions): Promise<Snapshotter> {
    await mkdir(join(o.root, 'snapshots'), { recursive: true, mode: 0o700 });
    await mkdir(join(o.root, 'l'), { recursive: true, mode: 0o700 });
    return new Snapshotter(o, SnapshotStore.open(join(o.root, 'metadata.db')));
  }

  close(): void {
    this.store.close();
  }

  private fsDir(id: number): string {
    return join(this.snapshotsDir, String(id), 'fs');
  }

  /** A snapshot's content directory: its own fs, or the remote layer directory it stands for. */
  private contentDir(r: SnapshotRecord): string {
    return r.external ?? this.fsDir(r.id);
  }

  prepare(key: string, parent: string, labels: Labels): Promise<Mount[]> {
    return this.create('active', key, parent, labels);
  }

  view(key: string, parent: string, labels: Labels): Promise<Mount[]> {
    return this.create('view', key, parent, labels);
  }

  private async create(kind: Exclude<Kind, 'committed'>, key: string, parent: string, labels: Labels): Promise<Mount[]> {
    if (kind === 'active') {
      const remote = remoteLayerRequest(labels);
      if (remote) await this.tryRemoteLayer(key, parent, labels, remote.target, remote.digest);
    }
    const r = this.store.create({ key, kind, parent, labels }, (id) => {
      const dir = join(this.snapshotsDir, String(id));
      // An id can come back after a crash rolled its row back; what is on disk under it is garbage.
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
      mkdirSync(join(dir, 'fs'), { recursive: true });
      if (kind === 'active') mkdirSync(join(dir, 'work'));
    });
    try {
      return await this.mountsOf(r, true);
    } catch (e) {
      // A snapshot that cannot be mounted (e.g. its thin layers' repository is unavailable) is not kept.
      await this.remove(key).catch(() => undefined);
      throw e;
    }
  }

  /**
   * If a repository holds the layer, makes the committed snapshot containerd asked for (named by
   * the target label, on `parent`) and answers ALREADY_EXISTS; otherwise returns and Prepare goes on.
   */
  private async tryRemoteLayer(key: string, parent: string, labels: Labels, target: string, digest: string): Promise<void> {
    if (this.store.get(key)) throw alreadyExists(`snapshot ${JSON.stringify(key)}`);
    const dir = await findRemoteLayer(digest, this.o.repositories ?? [], this.repos);
    this.o.events?.remoteLayer(dir !== undefined);
    if (!dir) {
      this.log(`remote layer sha256:${digest} is in no repository; unpacking it`);
      return;
    }
    // containerd finds the snapshot by the target label and the parent, not by name; the name is
    // the target unless another namespace's snapshot with a different parent already has it.
    for (let attempt = 0; ; attempt++) {
      const name = attempt === 0 ? target : `${target}@${createHash('sha256').update(`${parent}\n${attempt}`).digest('hex').slice(0, 12)}`;
      const existing = this.store.get(name);
      if (existing) {
        if (existing.kind === 'committed' && existing.parent === parent && existing.labels[TARGET_LABEL] === target) break;
        continue;
      }
      const thinJson = await readThinJson(dir, this.log);
      this.store.create({ key: name, kind: 'committed', parent, labels: { ...labels, [TARGET_LABEL]: target }, external: dir, thinJson }, () => undefined);
      this.log(`remote layer sha256:${digest} at ${dir} is snapshot ${name}`);
      break;
    }
    throw alreadyExists(`target snapshot ${JSON.stringify(target)}`);
  }

  async mounts(key: string): Promise<Mount[]> {
    const r = this.store.require(key);
    if (r.kind === 'committed') throw precondition(`snapshot ${JSON.stringify(key)} is not active or view`);
    return this.mountsOf(r, false);
  }

  /** `warmUp`: a new snapshot (Prepare, View) — ask the repositories to get its thin layers ready; Mounts only repeats the list. */
  private async mountsOf(r: SnapshotRecord, warmUp: boolean): Promise<Mount[]> {
    if (r.kind === 'committed') throw precondition(`snapshot ${JSON.stringify(r.name)} is committed`);
    const chain = this.store.parents(r);
    const paths = await this.lowerDirectories(chain, warmUp);
    const lowers: LowerDir[] = [];
    await this.takingTurns(async () => {
      for (const path of paths) lowers.push({ path, link: await this.links.link(path) });
    });
    const dir = join(this.snapshotsDir, String(r.id));
    const mounts = buildMounts({ kind: r.kind, fs: join(dir, 'fs'), work: join(dir, 'work'), lowers, indexOff: this.indexOff });
    this.o.events?.mounted(r.kind, chain.some((p) => p.thinJson !== null));
    return mounts;
  }

  /** The directories that make up a parent chain (nearest first), thin layers expanded. */
  private async lowerDirectories(chain: readonly SnapshotRecord[], warmUp: boolean): Promise<string[]> {
    const dirs: string[] = [];
    for (const p of chain) {
      if (p.thinJson !== null) dirs.push(...(await thinLayerDirectories(p.thinJson, this.repos, { warmUp, log: this.log })));
      else dirs.push(this.contentDir(p));
    }
    return dirs;
  }

  async commit(name: string, key: string, labels: Labels): Promise<void> {
    const r = this.store.require(key);
    if (r.kind !== 'active') throw precondition(`snapshot ${JSON.stringify(key)} is not active`);
    if (name === '') throw invalid('commit name must not be empty');
    if (this.store.get(name)) throw alreadyExists(`snapshot ${JSON.stringify(name)}`);
    // Measured before the transaction (it takes time); the snapshot no longer changes once containerd commits it.
    const usage = await diskUsage(this.fsDir(r.id));
    const thinJson = (await readThinJson(this.fsDir(r.id), this.log)) ?? null;
    if (thinJson) {
      this.log(`snapshot ${name} is a thin image layer`);
      this.o.events?.thinCommitted();
      // The pull is not over yet, and the container's Prepare comes after it: the repositories
      // already mounted may start attaching catalogs and prefetching now (Prepare asks again).
      void warmUpThinImage(parseThinJson(thinJson), { cvmfsRoot: this.repos.cvmfsRoot, log: this.log });
    }
    this.store.commit(key, name, { labels, ...usage, thinJson });
  }

  async remove(key: string): Promise<void> {
    const dir = (r: SnapshotRecord) => join(this.snapshotsDir, String(r.id));
    const removed = this.store.remove(key, (r) => {
      // Renamed inside the transaction: if that fails the row stays, so nothing is half removed.
      if (r.external === null && existsSync(dir(r))) renameSync(dir(r), join(this.snapshotsDir, `rm-${r.id}`));
    });
    if (removed.external === null) {
      await this.links.unlink(this.fsDir(removed.id));
      // A failure here leaves rm-<id> behind for Cleanup.
      await rm(join(this.snapshotsDir, `rm-${removed.id}`), { recursive: true, force: true }).catch((e) =>
        this.log(`removing ${join(this.snapshotsDir, `rm-${removed.id}`)}: ${describeError(e)}`),
      );
    }
  }

  stat(key: string): SnapshotInfo {
    return toInfo(this.store.require(key));
  }

  /**
   * Only labels can change. No paths: the labels are replaced; "labels": likewise; "labels.KEY":
   * that label is set to info's value (or removed when info has none), as containerd's store does.
   */
  update(info: { readonly name: string; readonly labels: Labels }, paths: readonly string[]): SnapshotInfo {
    const r = this.store.require(info.name);
    let labels: Labels;
    if (paths.length === 0) {
      labels = info.labels;
    } else {
      labels = { ...r.labels };
      for (const path of paths) {
        if (path === 'labels') labels = { ...info.labels };
        else if (path.startsWith('labels.')) {
          const k = path.slice('labels.'.length);
          labels[k] = info.labels[k] ?? '';
        } else throw invalid(`cannot update ${JSON.stringify(path)} field on snapshot ${JSON.stringify(info.name)}`);
      }
    }
    return toInfo(this.store.setLabels(info.name, cleanLabels(labels)));
  }

  list(filters: readonly string[]): SnapshotInfo[] {
    const match = compileFilters(filters);
    return this.store.all().map(toInfo).filter(match);
  }

  /**
   * What this snapshotter stores for the snapshot: an active one is measured now, a committed one
   * was measured at commit; views and remote layers (stored in CVMFS) use nothing.
   */
  async usage(key: string): Promise<Usage> {
    const r = this.store.require(key);
    if (r.kind === 'active') return diskUsage(this.fsDir(r.id));
    return { size: r.size ?? 0, inodes: r.inodes ?? 0 };
  }

  /** Removes snapshot directories and links that no snapshot uses (left over by crashes). */
  async cleanup(): Promise<void> {
    await this.takingTurns(() => this.cleanupNow());
  }

  /** Runs `fn` after every earlier link operation has finished, and before any later one. */
  private takingTurns<T>(fn: () => Promise<T>): Promise<T> {
    const turn = this.linkTurn.then(fn, fn);
    this.linkTurn = turn.catch(() => undefined);
    return turn;
  }

  private async cleanupNow(): Promise<void> {
    const records = this.store.all();
    const ids = new Set(records.map((r) => String(r.id)));
    for (const name of await readdir(this.snapshotsDir)) {
      if (ids.has(name)) continue;
      this.log(`cleanup: removing ${join(this.snapshotsDir, name)}`);
      await rm(join(this.snapshotsDir, name), { recursive: true, force: true });
    }
    const used = new Set<string>();
    for (const r of records) {
      used.add(this.contentDir(r));
      if (r.thinJson !== null) {
        // Names only: Cleanup must not mount repositories to learn what it may delete.
        for (const l of parseThinJson(r.thinJson).layers) used.add(layerDirectory(l, this.repos.cvmfsRoot));
      }
    }
    await this.links.prune((target) => used.has(target));
  }
}
