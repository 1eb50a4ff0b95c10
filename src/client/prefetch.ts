/**
 * What makes a thin image's cold start fast, on the daemon's side (talk commands, control.ts):
 *
 * - `record start` / `record stop`: an AccessRecorder sits between the file system and the fetcher
 *   and notes every object a reader asks for, once, in first-asked order (`thin record` turns the
 *   list into an access profile);
 * - `prefetch profile PATH`: reads the access profile at repository PATH and fetches its objects in
 *   the background at `prefetch` priority (the fetcher's slots keep them out of readers' way);
 * - `prefetch catalogs PATH…`: attaches the nested catalogs under which each PATH lies, all at once;
 * - `prefetch status`: what the background downloads brought and what readers used of it.
 *
 * CVMFS_TS_PREFETCH=no / CVMFS_TS_CATALOG_PREFETCH=no turn the prefetch commands into no-ops that say so.
 */
import { setMaxListeners } from 'node:events';
import { parseAccessProfile, type ProfiledObject } from '../format/access-profile';
import type { BackgroundLedger } from '../fetch/background-ledger';
import type { DownloadSlots } from '../fetch/download-slots';
import { CvmfsError, describeError } from '../errors';
import type { FetchRequest, ObjectFetcher } from './object-fetcher';

/** One object a reader asked for while recording. */
export interface RecordedAccess extends Omit<ProfiledObject, 'hash'> {
  readonly hash: string;
  /** Milliseconds after `record start`. */
  readonly ms: number;
}

/** Passes requests on to the fetcher; while recording, notes each new object a reader asks for. */
export class AccessRecorder implements ObjectFetcher {
  private recording: { readonly since: number; readonly seen: Set<string>; readonly accesses: RecordedAccess[] } | undefined;

  constructor(private readonly inner: ObjectFetcher) {}

  fetch(req: FetchRequest): Promise<string> {
    const r = this.recording;
    if (r && (req.priority ?? 'demand') === 'demand' && !req.external && (req.suffix === '' || req.suffix === 'P')) {
      const hash = req.hash.toString();
      if (!r.seen.has(hash)) {
        r.seen.add(hash);
        r.accesses.push({ hash, suffix: req.suffix, compressed: req.compressed, size: req.size ?? 0, path: req.path ?? req.description, ms: Math.round(performance.now() - r.since) });
      }
    }
    return this.inner.fetch(req);
  }

  get active(): boolean {
    return this.recording !== undefined;
  }

  /** Starts a new recording (an unfinished one is dropped). */
  start(): void {
    this.recording = { since: performance.now(), seen: new Set(), accesses: [] };
  }

  /** Ends the recording; its accesses in first-asked order (none when nothing was recording). */
  stop(): RecordedAccess[] {
    const accesses = this.recording?.accesses ?? [];
    this.recording = undefined;
    return accesses;
  }
}

/** A fetcher that can be told who waits (the mount's Fetcher). */
export interface PrioritizedFetcher extends ObjectFetcher {
  fetchToBuffer(req: FetchRequest): Promise<Buffer>;
  readonly background: BackgroundLedger;
  readonly slots: DownloadSlots;
}

export interface PrefetchParts {
  readonly fetcher: PrioritizedFetcher;
  readonly recorder: AccessRecorder;
  /** The objects of a regular file (the file system's), to read a profile stored in the repository. */
  objectRequests(path: string): Promise<FetchRequest[]>;
  /** Attaches the catalogs a path lies in (lists the directory). */
  attachCatalogsOf(path: string): Promise<void>;
  readonly settings: { readonly prefetch: boolean; readonly catalogPrefetch: boolean };
  readonly log: { info(m: string): void; warn(m: string): void };
}

interface ProfileRun {
  readonly path: string;
  readonly objects: number;
  readonly bytes: number;
  done: number;
  failed: number;
  readonly started: number;
  seconds?: number;
}

/** A profile is a few hundred bytes per object; anything larger than this is refused. */
const MAX_PROFILE_BYTES = 64 << 20;

export class Prefetcher {
  private readonly runs: ProfileRun[] = [];
  private readonly controller = new AbortController();
  private readonly starting = new Map<string, Promise<string>>();

  constructor(private readonly p: PrefetchParts) {
    // Every queued prefetch listens to this one signal: thousands of listeners are expected.
    setMaxListeners(0, this.controller.signal);
  }

  /** `prefetch profile PATH`: starts fetching the profile's objects; answers once they are queued. */
  async profile(path: string): Promise<string> {
    if (!this.p.settings.prefetch) return 'prefetch is off (CVMFS_TS_PREFETCH=no)\n';
    const repoPath = normalize(path);
    const previous = this.runs.find((r) => r.path === repoPath && r.failed === 0);
    if (previous) return `already prefetched (${previous.objects} objects)\n`;
    // The snapshotter asks at Commit and again at Prepare: a second request while the profile is
    // still being read gets the first one's answer instead of queueing every object again.
    let starting = this.starting.get(repoPath);
    if (!starting) {
      starting = this.start(repoPath).finally(() => this.starting.delete(repoPath));
      this.starting.set(repoPath, starting);
    }
    return starting;
  }

  private async start(repoPath: string): Promise<string> {
    let text: string;
    try {
      const parts = await this.p.objectRequests(repoPath);
      const buffers = [];
      let total = 0;
      for (const req of parts) {
        const b = await this.p.fetcher.fetchToBuffer(req);
        total += b.length;
        if (total > MAX_PROFILE_BYTES) throw new CvmfsError('E_FORMAT', `larger than ${MAX_PROFILE_BYTES} bytes`);
        buffers.push(b);
      }
      text = Buffer.concat(buffers).toString('utf8');
    } catch (e) {
      if (e instanceof CvmfsError && e.code === 'E_NOT_FOUND') return `no access profile at ${repoPath}\n`;
      throw e;
    }
    const profile = parseAccessProfile(text);
    const run: ProfileRun = {
      path: repoPath,
      objects: profile.objects.length,
      bytes: profile.objects.reduce((n, o) => n + o.size, 0),
      done: 0,
      failed: 0,
      started: performance.now(),
    };
    this.runs.push(run);
    this.p.fetcher.background.prefetchStarting();
    const signal = this.controller.signal;
    void Promise.all(
      profile.objects.map((o) =>
        this.p.fetcher
          .fetch({ hash: o.hash, suffix: o.suffix, compressed: o.compressed, size: o.size, description: `prefetch ${o.path}`, path: o.path, priority: 'prefetch', signal } as FetchRequest)
          .then(
            () => void run.done++,
            (e: unknown) => {
              run.failed++;
              if (!signal.aborted && run.failed <= 3) this.p.log.warn(`prefetch of ${o.path} (${o.hash.toString()}) failed: ${describeError(e)}`);
            },
          ),
      ),
    ).then(() => {
      run.seconds = (performance.now() - run.started) / 1000;
      this.p.log.info(`prefetch of ${repoPath}: ${run.done} of ${run.objects} objects in ${run.seconds.toFixed(2)} s (${run.failed} failed)`);
    });
    this.p.log.info(`prefetching ${run.objects} objects (${run.bytes} bytes) of ${repoPath}`);
    return `prefetching ${run.objects} objects (${run.bytes} bytes)\n`;
  }

  /** `prefetch catalogs PATH…`: the nested catalogs of every path attached, in parallel; answers when done. */
  async catalogs(paths: string[]): Promise<string> {
    if (!this.p.settings.catalogPrefetch) return 'catalog prefetch is off (CVMFS_TS_CATALOG_PREFETCH=no)\n';
    const started = performance.now();
    const results = await Promise.allSettled(paths.map((path) => this.p.attachCatalogsOf(normalize(path))));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${normalize(paths[i]!)}: ${describeError(r.reason)}`] : []));
    const ms = Math.round(performance.now() - started);
    return `attached the catalogs of ${paths.length - failed.length} of ${paths.length} paths in ${ms} ms\n${failed.map((f) => `failed: ${f}\n`).join('')}`;
  }

  /** `prefetch status`: one `name value` line per figure. */
  status(): string {
    const bg = this.p.fetcher.background;
    const slots = this.p.fetcher.slots.counts();
    const lines: [string, number | string][] = [
      ['prefetch_enabled', this.p.settings.prefetch ? 'yes' : 'no'],
      ['catalog_prefetch_enabled', this.p.settings.catalogPrefetch ? 'yes' : 'no'],
      ['profiles_started', this.runs.length],
      ['profile_objects', this.runs.reduce((n, r) => n + r.objects, 0)],
      ['profile_objects_done', this.runs.reduce((n, r) => n + r.done, 0)],
      ['profile_objects_failed', this.runs.reduce((n, r) => n + r.failed, 0)],
      ['profiles_running', this.runs.filter((r) => r.seconds === undefined).length],
      ['last_profile_seconds', this.runs.at(-1)?.seconds?.toFixed(3) ?? ''],
      ['downloads_running', slots.running],
      ['downloads_queued', slots.queued.demand + slots.queued.readahead + slots.queued.prefetch],
      ['reader_misses_uncovered', bg.uncovered],
    ];
    for (const cls of ['prefetch', 'readahead'] as const) {
      const c = bg.counters[cls];
      lines.push([`${cls}_downloads`, c.downloads], [`${cls}_bytes`, c.bytes], [`${cls}_hits`, c.hits], [`${cls}_hit_bytes`, c.hitBytes], [`${cls}_late`, c.late], [`${cls}_unread_bytes`, c.unreadBytes]);
    }
    return lines.map(([k, v]) => `${k} ${v}\n`).join('');
  }

  /** `record start`. */
  recordStart(): string {
    this.p.recorder.start();
    return 'OK\n';
  }

  /** `record stop`: the recorded accesses as one JSON array. */
  recordStop(): string {
    return `${JSON.stringify(this.p.recorder.stop())}\n`;
  }

  /** Stops queued prefetches (unmount). */
  close(): void {
    this.controller.abort(new CvmfsError('E_UNAVAILABLE', 'unmounting'));
  }
}

/** A repository path as the file system takes it: one leading slash, none trailing. */
function normalize(path: string): string {
  return `/${path.trim().replace(/^\/+|\/+$/g, '')}`;
}
