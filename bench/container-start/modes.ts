/**
 * How a container is started, one strategy per mode. The harness (bench.ts) calls, per image:
 * `setup` once, then for every run `prepare` (not timed), starts the clock, `measure` (resolves with
 * the moment the task's expected output appeared, after the container has exited), and once at the
 * end `teardown`; `afterRun`, when there, right after each run (outside the clock: its numbers are
 * recorded with the run). A new mode is one more object in MODES.
 */
import { performance } from 'node:perf_hooks';
import { PROXY_NAME } from '../../test/helpers/containerd';
import { sleep } from '../lib/proc';
import { PLAIN_CLIENT, type BenchImage, type Environment, type MountParameters } from './environment';

export interface ModeContext {
  readonly env: Environment;
  readonly image: BenchImage;
  readonly log: (line: string) => void;
  /** A container id unique to this run. */
  id(run: number | string): string;
  /** Marks the end of a phase of the timed part (e.g. 'pull'): its seconds since the clock started are recorded. */
  phase(name: string): void;
  /**
   * Called by runTask the moment the task's output is seen (the clock has stopped; the container
   * is still exiting): the harness scrapes the daemons' metrics then (breakdown.ts).
   */
  clockStopped(): void;
}

export interface Mode {
  readonly name: string;
  /** One line for the Markdown report: what is in the clock, what is cached. */
  readonly description: string;
  /**
   * The container starts through our snapshotter and mount daemon: the harness records where the
   * time went from their metrics (breakdown.ts).
   */
  readonly breakdown?: boolean;
  setup?(ctx: ModeContext): Promise<void>;
  /** Before each run, outside the clock; may return numbers recorded with the run (e.g. mount_s). */
  prepare?(ctx: ModeContext, run: number): Promise<Record<string, number> | void>;
  /** The timed part; resolves with performance.now() of the expected output, once the container is gone. */
  measure(ctx: ModeContext, run: number): Promise<number>;
  /** After each run, outside the clock: figures kept with the run (e.g. the daemon's prefetch status). */
  afterRun?(ctx: ModeContext, run: number): Promise<Record<string, number> | void>;
  teardown?(ctx: ModeContext): Promise<void>;
}

/** Runs the image's task and waits for the container to exit; resolves with the time of its output. */
async function runTask(ctx: ModeContext, ref: string, id: string, snapshotter?: string): Promise<number> {
  const r = ctx.env.runUntil(ref, id, ctx.image, { snapshotter });
  r.seen.then(() => ctx.clockStopped(), () => undefined);
  const [seen, exit] = await Promise.all([r.seen, r.exit]);
  if (id.endsWith('-0') || id.endsWith('-warmup')) ctx.log(`    ${id}: ${JSON.stringify(exit.stdout.trim().slice(0, 200))}`);
  return seen;
}

/** The thin image pulled into our snapshotter (tiny: thin.json and the config). */
async function ensureThinImage(ctx: ModeContext): Promise<void> {
  if (!(await ctx.env.hasImage(ctx.env.thinRef(ctx.image)))) await ctx.env.pull(ctx.env.thinRef(ctx.image), PROXY_NAME);
}

/** Mounted with the default client parameters (a thin-cold-plain mount does not count). */
async function ensureMounted(ctx: ModeContext): Promise<void> {
  if (ctx.env.isMountedWith({})) return;
  await ctx.env.unmountRepository();
  await ctx.env.mountRepository();
}

/** How long afterRun waits for a profile prefetch still running when the task is done. */
const PREFETCH_SETTLE_MS = 30_000;

/**
 * The daemon's `prefetch status` once the background downloads have settled (the profile's
 * prefetch may outlive the task; what it fetches then is counted too), plus `settle_s`, the seconds
 * that took after the end of the clock, and `profile_objects_done_at_clock`.
 */
async function prefetchFigures(ctx: ModeContext): Promise<Record<string, number>> {
  const t0 = performance.now();
  const atClock = await ctx.env.prefetchStatus();
  let s = atClock;
  while ((s.profiles_running ?? 0) + (s.downloads_running ?? 0) + (s.downloads_queued ?? 0) > 0 && performance.now() - t0 < PREFETCH_SETTLE_MS) {
    await sleep(200);
    s = await ctx.env.prefetchStatus();
  }
  return { ...s, profile_objects_done_at_clock: atClock.profile_objects_done ?? 0, settle_s: Math.round(performance.now() - t0) / 1000 };
}

export const fullPull: Mode = {
  name: 'full-pull',
  description: 'clock: `ctr images pull` from the registry over the link + unpack with the overlayfs snapshotter + `ctr run`; image content and snapshots removed and page cache dropped before each run',
  async setup(ctx) {
    // No repository mount in the background (its revision checks would count as requests).
    await ctx.env.unmountRepository();
    await ctx.env.removeImage(ctx.env.imageRef(ctx.image));
  },
  async prepare(ctx) {
    await ctx.env.removeImage(ctx.env.imageRef(ctx.image));
    await ctx.env.dropCaches();
  },
  async measure(ctx, run) {
    const ref = ctx.env.imageRef(ctx.image);
    await ctx.env.pull(ref);
    ctx.phase('pull');
    return runTask(ctx, ref, ctx.id(run));
  },
};

export const local: Mode = {
  name: 'local',
  description: 'clock: `ctr run` of the image already pulled and unpacked by the overlayfs snapshotter, page cache warm (the floor)',
  async setup(ctx) {
    await ctx.env.unmountRepository();
    const ref = ctx.env.imageRef(ctx.image);
    if (!(await ctx.env.hasImage(ref))) await ctx.env.pull(ref);
    await runTask(ctx, ref, ctx.id('warmup'));
  },
  async measure(ctx, run) {
    return runTask(ctx, ctx.env.imageRef(ctx.image), ctx.id(run));
  },
  async teardown(ctx) {
    await ctx.env.removeImage(ctx.env.imageRef(ctx.image));
  },
};

/** A cold thin start; the repository mounted with `params` (see PLAIN_CLIENT). */
function thinColdMode(name: string, params: MountParameters, what: string): Mode {
  return {
    name,
    breakdown: true,
    description:
      'clock: `ctr images pull` of the thin image into the cvmfs-ts snapshotter + `ctr run` over the repository; before each run: thin image removed, repository unmounted, client cache emptied, ' +
      `repository mounted again ${what} (outside the clock, see mount_s), page cache dropped; after each run the daemon's \`prefetch status\` is read once the background downloads have settled`,
    async prepare(ctx) {
      await ctx.env.removeImage(ctx.env.thinRef(ctx.image));
      await ctx.env.unmountRepository();
      await ctx.env.wipeCache();
      const mount_s = await ctx.env.mountRepository(params);
      await ctx.env.dropCaches();
      return { mount_s };
    },
    async measure(ctx, run) {
      const ref = ctx.env.thinRef(ctx.image);
      await ctx.env.pull(ref, PROXY_NAME);
      ctx.phase('pull');
      return runTask(ctx, ref, ctx.id(run), PROXY_NAME);
    },
    afterRun: prefetchFigures,
  };
}

/** thin-cold with parallel downloads, chunk readahead, profile and catalog prefetch all off. */
export const thinColdPlain: Mode = thinColdMode(
  'thin-cold-plain',
  PLAIN_CLIENT,
  `with ${Object.entries(PLAIN_CLIENT)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ')} (one download at a time, no readahead, no profile or catalog prefetch: the client before issue 8)`,
);

/** The client's defaults: parallel downloads, chunk readahead, profile and catalog prefetch. */
export const thinCold: Mode = thinColdMode('thin-cold', {}, "with the client's defaults (parallel downloads, chunk readahead, profile and catalog prefetch at the snapshotter's Prepare)");

/** Warm and hot start from the pulled thin image, its objects in the client cache after one unrecorded run. */
async function runThinOnceUntimed(ctx: ModeContext): Promise<void> {
  await ensureThinImage(ctx);
  await ensureMounted(ctx);
  await runTask(ctx, ctx.env.thinRef(ctx.image), ctx.id('warmup'), PROXY_NAME);
}

function runThin(ctx: ModeContext, run: number): Promise<number> {
  return runTask(ctx, ctx.env.thinRef(ctx.image), ctx.id(run), PROXY_NAME);
}

export const thinWarm: Mode = {
  name: 'thin-warm',
  breakdown: true,
  description: 'clock: `ctr run` of the pulled thin image; client disk cache filled, repository freshly mounted (outside the clock) and page cache dropped before each run',
  setup: runThinOnceUntimed,
  async prepare(ctx) {
    await ctx.env.unmountRepository();
    const mount_s = await ctx.env.mountRepository();
    await ctx.env.dropCaches();
    return { mount_s };
  },
  measure: runThin,
};

export const thinHot: Mode = {
  name: 'thin-hot',
  breakdown: true,
  description: 'clock: `ctr run` of the pulled thin image; repository mounted, disk cache and page cache warm',
  setup: runThinOnceUntimed,
  measure: runThin,
  async teardown(ctx) {
    await ctx.env.removeImage(ctx.env.thinRef(ctx.image));
  },
};

/** Every mode, in the order they run for each image (full-pull leaves the image that local uses). */
export const MODES: readonly Mode[] = [fullPull, local, thinColdPlain, thinCold, thinWarm, thinHot];

export function selectModes(names: readonly string[] | undefined): Mode[] {
  if (!names || names.length === 0) return [...MODES];
  return names.map((n) => {
    const m = MODES.find((x) => x.name === n);
    if (!m) throw new Error(`unknown mode ${n} (known: ${MODES.map((x) => x.name).join(', ')})`);
    return m;
  });
}
