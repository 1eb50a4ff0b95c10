/**
 * How a container is started, one strategy per mode. The harness (bench.ts) calls, per image:
 * `setup` once, then for every run `prepare` (not timed), starts the clock, `measure` (resolves with
 * the moment the task's expected output appeared, after the container has exited), and once at the
 * end `teardown`. A new mode (e.g. a later `thin-cold-plain`) is one more object in MODES.
 */
import { PROXY_NAME } from '../../test/helpers/containerd';
import type { BenchImage, Environment } from './environment';

export interface ModeContext {
  readonly env: Environment;
  readonly image: BenchImage;
  readonly log: (line: string) => void;
  /** A container id unique to this run. */
  id(run: number | string): string;
  /** Marks the end of a phase of the timed part (e.g. 'pull'): its seconds since the clock started are recorded. */
  phase(name: string): void;
}

export interface Mode {
  readonly name: string;
  /** One line for the Markdown report: what is in the clock, what is cached. */
  readonly description: string;
  setup?(ctx: ModeContext): Promise<void>;
  /** Before each run, outside the clock; may return numbers recorded with the run (e.g. mount_s). */
  prepare?(ctx: ModeContext, run: number): Promise<Record<string, number> | void>;
  /** The timed part; resolves with performance.now() of the expected output, once the container is gone. */
  measure(ctx: ModeContext, run: number): Promise<number>;
  teardown?(ctx: ModeContext): Promise<void>;
}

/** Runs the image's task and waits for the container to exit; resolves with the time of its output. */
async function runTask(ctx: ModeContext, ref: string, id: string, snapshotter?: string): Promise<number> {
  const r = ctx.env.runUntil(ref, id, ctx.image, { snapshotter });
  const [seen, exit] = await Promise.all([r.seen, r.exit]);
  if (id.endsWith('-0') || id.endsWith('-warmup')) ctx.log(`    ${id}: ${JSON.stringify(exit.stdout.trim().slice(0, 200))}`);
  return seen;
}

/** The thin image pulled into our snapshotter (tiny: thin.json and the config). */
async function ensureThinImage(ctx: ModeContext): Promise<void> {
  if (!(await ctx.env.hasImage(ctx.env.thinRef(ctx.image)))) await ctx.env.pull(ctx.env.thinRef(ctx.image), PROXY_NAME);
}

async function ensureMounted(ctx: ModeContext): Promise<void> {
  if (!ctx.env.isMounted()) await ctx.env.mountRepository();
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

export const thinCold: Mode = {
  name: 'thin-cold',
  description:
    'clock: `ctr images pull` of the thin image into the cvmfs-ts snapshotter + `ctr run` over the repository; before each run: thin image removed, repository unmounted, client cache emptied, repository mounted again (outside the clock, see mount_s), page cache dropped',
  async prepare(ctx) {
    await ctx.env.removeImage(ctx.env.thinRef(ctx.image));
    await ctx.env.unmountRepository();
    await ctx.env.wipeCache();
    const mount_s = await ctx.env.mountRepository();
    await ctx.env.dropCaches();
    return { mount_s };
  },
  async measure(ctx, run) {
    const ref = ctx.env.thinRef(ctx.image);
    await ctx.env.pull(ref, PROXY_NAME);
    ctx.phase('pull');
    return runTask(ctx, ref, ctx.id(run), PROXY_NAME);
  },
};

export const thinWarm: Mode = {
  name: 'thin-warm',
  description: 'clock: `ctr run` of the pulled thin image; client disk cache filled, repository freshly mounted (outside the clock) and page cache dropped before each run',
  async setup(ctx) {
    await ensureThinImage(ctx);
    await ensureMounted(ctx);
    await runTask(ctx, ctx.env.thinRef(ctx.image), ctx.id('warmup'), PROXY_NAME);
  },
  async prepare(ctx) {
    await ctx.env.unmountRepository();
    const mount_s = await ctx.env.mountRepository();
    await ctx.env.dropCaches();
    return { mount_s };
  },
  async measure(ctx, run) {
    return runTask(ctx, ctx.env.thinRef(ctx.image), ctx.id(run), PROXY_NAME);
  },
};

export const thinHot: Mode = {
  name: 'thin-hot',
  description: 'clock: `ctr run` of the pulled thin image; repository mounted, disk cache and page cache warm',
  async setup(ctx) {
    await ensureThinImage(ctx);
    await ensureMounted(ctx);
    await runTask(ctx, ctx.env.thinRef(ctx.image), ctx.id('warmup'), PROXY_NAME);
  },
  async measure(ctx, run) {
    return runTask(ctx, ctx.env.thinRef(ctx.image), ctx.id(run), PROXY_NAME);
  },
  async teardown(ctx) {
    await ctx.env.removeImage(ctx.env.thinRef(ctx.image));
  },
};

/** Every mode, in the order they run for each image (full-pull leaves the image that local uses). */
export const MODES: readonly Mode[] = [fullPull, local, thinCold, thinWarm, thinHot];

export function selectModes(names: readonly string[] | undefined): Mode[] {
  if (!names || names.length === 0) return [...MODES];
  return names.map((n) => {
    const m = MODES.find((x) => x.name === n);
    if (!m) throw new Error(`unknown mode ${n} (known: ${MODES.map((x) => x.name).join(', ')})`);
    return m;
  });
}
