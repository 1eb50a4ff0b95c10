/**
 * Everything bench/container-start runs in, set up once and torn down by a Cleanup:
 *
 *   server namespace:  docker-registry (127.0.0.1:REG)   cvmfs-ts serve (127.0.0.1:CVMFS)
 *                        ▲                                  ▲
 *                      delay proxy (+RTT/2 each way): SERVER_IP:5000 → REG, SERVER_IP:8000 → CVMFS
 *                        ║ veth pair, tc tbf RATE on both ends (byte counters: the server end)
 *   client namespace:  `ctr images pull`, `cvmfs-ts mount` (joined with nsenter --net only, so
 *                      their mounts are in the shared mount namespace)
 *   root namespace:    containerd + the cvmfs-ts snapshotter (test/helpers/containerd.ts); they
 *                      only use unix sockets and the mount table.
 *
 * The repository (all images ingested with `cvmfs-ts image ingest`, plus each image's access
 * profile recorded with `cvmfs-ts thin record`), its keys and the registry's storage are cached
 * under `cacheDir` and reused while the images do not change.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { getAttribute } from '@napi-rs/xattr';
import type { Test } from 'tap';
import { startContainerd, PROXY_NAME, mountsUnder, type ContainerdEnv } from '../../test/helpers/containerd';
import { createKeys, keyFiles } from '../../src/publish/keys';
import { parseThinJson, type ThinImage } from '../../src/image/thin-json';
import { sendTalkThroughMount } from '../../src/thin/warm-up';
import { countAccessLines, startDaemon, type Daemon } from '../lib/daemon';
import { scrapeMetrics, type MetricsPoint, type MetricsSockets } from './breakdown';
import { delayProxyArgv } from '../lib/delay-proxy';
import { createLink, removeLinkByPrefix, type EmulatedLink, type LinkCounters } from '../lib/netns';
import { run, waitFor, type Cleanup, type RunOutput } from '../lib/proc';

export const ROOT = resolve(__dirname, '../..');
export const BIN = join(ROOT, 'bin/cvmfs-ts');
export const FQRN = 'bench.cvmfs-ts.io';
const REGISTRY_PORT = 5000;
const CVMFS_PORT = 8000;
/** Binaries every container start reads; re-read after dropping the page cache (see dropCaches). */
const TOOLCHAIN = ['/usr/bin/ctr', '/usr/sbin/runc', '/usr/bin/containerd-shim-runc-v2', '/usr/bin/nsenter'];

/** An image as the bench gets it: an OCI layout tag plus the task to run. */
export interface BenchImage {
  readonly name: string;
  readonly layout: string;
  readonly tag: string;
  readonly manifestDigest: string;
  readonly compressedBytes: number;
  readonly unpackedBytes: number;
  readonly command: readonly string[];
  readonly expect: string;
}

export interface EnvironmentOptions {
  readonly cleanup: Cleanup;
  /** Per-run state (containerd, mounts, cache, logs): emptied first. */
  readonly workDir: string;
  /** Repository, keys, registry storage: kept between runs. */
  readonly cacheDir: string;
  readonly images: readonly BenchImage[];
  readonly rateMbit: number;
  readonly rttMs: number;
  /** Names of namespaces/veths (PREFIX-server, …) and the /24 used. */
  readonly prefix: string;
  readonly subnet: string;
  readonly log: (line: string) => void;
  /**
   * Containers wanted (default true): push the images to the registry and start containerd. The
   * latency step alone (latency.ts) needs neither.
   */
  readonly containers?: boolean;
  /** Recording window of `thin record` (the task is killed when it ends; default 90 s). */
  readonly profileSeconds?: number;
  /**
   * The mount daemon (CVMFS_TS_METRICS_LISTEN) and the snapshotter (--metrics-listen) serve
   * Prometheus metrics on unix sockets in the work directory, for the per-run breakdown
   * (breakdown.ts). Default true; costs two performance.now() per FUSE request in the daemon.
   */
  readonly metrics?: boolean;
}

/**
 * Client parameters of a mount (`cvmfs-ts mount -o NAME=VALUE,…`); {} = the configuration's
 * defaults. PLAIN_CLIENT turns off the four cold-start features of issue 8.
 */
export type MountParameters = Readonly<Record<string, string>>;
export const PLAIN_CLIENT: MountParameters = {
  CVMFS_TS_PARALLEL_DOWNLOADS: '1',
  CVMFS_TS_READAHEAD_CHUNKS: '0',
  CVMFS_TS_PREFETCH: 'no',
  CVMFS_TS_CATALOG_PREFETCH: 'no',
};

/** What `thin record` stored for an image (the marker in CACHE/thin/NAME/profile.json). */
export interface ProfileInfo {
  readonly format: number;
  readonly manifestDigest: string;
  /** Repository path of the profile (thin.json's `profile`). */
  readonly path: string;
  readonly objects: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly exit: string;
  readonly revision: number;
  readonly recordSeconds: number;
}

/**
 * Bump to record every profile again (e.g. when `thin record` changes what it notes). 2: the task
 * runs with the image config's Env (LANG=C.UTF-8 makes even `echo` read locale files).
 */
const PROFILE_FORMAT = 3; // 3: thin record reads /etc/passwd and /etc/group first

/** The image config's Env (what the container's task gets), from the OCI layout. */
async function imageEnv(image: BenchImage): Promise<string[]> {
  const blob = (digest: string) => join(image.layout, 'blobs', ...digest.split(':'));
  const manifest = JSON.parse(await readFile(blob(image.manifestDigest), 'utf8')) as { config: { digest: string } };
  const config = JSON.parse(await readFile(blob(manifest.config.digest), 'utf8')) as { config?: { Env?: string[] } };
  return config.config?.Env ?? [];
}

export interface RequestCounts {
  readonly registry: number;
  readonly cvmfs: number;
}

export interface Snapshot {
  readonly link: LinkCounters;
  readonly requests: RequestCounts;
}

export interface RunUntil {
  /** performance.now() when the expected output appeared (rejects if it never did). */
  readonly seen: Promise<number>;
  /** The command's exit. */
  readonly exit: Promise<RunOutput>;
}

export class Environment {
  private mountPid = 0;
  private mountParams: MountParameters = {};
  private constructor(
    readonly o: EnvironmentOptions,
    readonly link: EmulatedLink,
    private readonly containerdEnv: ContainerdEnv | undefined,
    private readonly registry: Daemon,
    private readonly serve: Daemon,
    private readonly proxy: Daemon,
    readonly configRoot: string,
    readonly cacheBase: string,
    readonly cvmfsRoot: string,
    /** Access profiles per image name (recorded or found in the cache). */
    readonly profiles: ReadonlyMap<string, ProfileInfo>,
    /** Where the daemons serve metrics (undefined with `metrics: false`). */
    readonly metricsSockets: MetricsSockets | undefined,
  ) {}

  /** Both daemons' metrics now (undefined with `metrics: false`; a daemon not running is left out). */
  async scrapeMetrics(): Promise<MetricsPoint | undefined> {
    return this.metricsSockets ? scrapeMetrics(this.metricsSockets) : undefined;
  }

  /** The image's thin.json as ingested (with its `profile` field). */
  thinJsonPath(image: BenchImage): string {
    return join(this.o.cacheDir, 'thin', image.name, 'thin.json');
  }

  async thinImage(image: BenchImage): Promise<ThinImage> {
    return parseThinJson(await readFile(this.thinJsonPath(image), 'utf8'));
  }

  /** Sends a command to the mounted repository's daemon (control socket from user.talk_socket). */
  talk(command: string): Promise<string> {
    return sendTalkThroughMount(this.mountpoint, command);
  }

  /** `prefetch status` of the mounted repository as numbers (`yes`/`no` → 1/0, empty → omitted). */
  async prefetchStatus(): Promise<Record<string, number>> {
    return parseStatus(await this.talk('prefetch status'));
  }

  /** containerd with our snapshotter (not there with `containers: false`). */
  get containerd(): ContainerdEnv {
    if (!this.containerdEnv) throw new Error('this environment runs no containerd (containers: false)');
    return this.containerdEnv;
  }

  get namespace(): string {
    return this.containerd.namespace;
  }

  get mountpoint(): string {
    return join(this.cvmfsRoot, FQRN);
  }

  /** Reference of the original image in the registry, as the client reaches it (over the link). */
  imageRef(image: BenchImage): string {
    return `${this.link.server.ip}:${REGISTRY_PORT}/bench/${image.name}:latest`;
  }

  thinRef(image: BenchImage): string {
    return `${this.link.server.ip}:${REGISTRY_PORT}/bench/${image.name}:thin`;
  }

  /** `ctr` in the client namespace against our containerd. */
  ctrArgv(args: readonly string[]): string[] {
    return [...this.link.enter('client'), 'ctr', '-a', this.containerd.address, '-n', this.namespace, ...args];
  }

  ctr(args: readonly string[], o: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunOutput> {
    return run(this.ctrArgv(args), { timeoutMs: 600_000, ...o });
  }

  async pull(ref: string, snapshotter?: string): Promise<void> {
    await this.ctr(['images', 'pull', '--plain-http', ...(snapshotter ? ['--snapshotter', snapshotter] : []), ref]);
  }

  /** Removes an image with its content and snapshots (synchronous garbage collection). */
  async removeImage(ref: string): Promise<void> {
    await this.ctr(['images', 'rm', '--sync', ref], { allowFail: true });
  }

  async hasImage(ref: string): Promise<boolean> {
    return (await this.ctr(['images', 'ls', '-q'])).stdout.split('\n').includes(ref);
  }

  /**
   * `ctr run --rm REF ID COMMAND…`; `seen` resolves when `expect` shows up on its stdout. The
   * container is killed and removed if it does not finish within `timeoutMs`.
   */
  runUntil(ref: string, id: string, image: BenchImage, o: { snapshotter?: string; timeoutMs?: number } = {}): RunUntil {
    const argv = this.ctrArgv(['run', '--rm', ...(o.snapshotter ? ['--snapshotter', o.snapshotter] : []), ref, id, ...image.command]);
    let seenResolve!: (t: number) => void;
    let seenReject!: (e: Error) => void;
    const seen = new Promise<number>((ok, fail) => {
      seenResolve = ok;
      seenReject = fail;
    });
    seen.catch(() => undefined);
    const exit = new Promise<RunOutput>((done, fail) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let found = false;
      child.stdout.on('data', (d: Buffer) => {
        stdout += d;
        if (!found && stdout.includes(image.expect)) {
          found = true;
          seenResolve(performance.now());
        }
      });
      child.stderr.on('data', (d: Buffer) => (stderr += d));
      const timer = setTimeout(() => {
        void this.ctr(['tasks', 'kill', '-a', '-s', 'SIGKILL', id], { allowFail: true });
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }, o.timeoutMs ?? 600_000);
      child.on('error', fail);
      child.on('close', (code) => {
        clearTimeout(timer);
        const r = { code, stdout, stderr };
        if (!found) seenReject(new Error(`${argv.join(' ')} exited with ${code} without printing ${JSON.stringify(image.expect)}:\n${stdout}${stderr}`));
        if (code !== 0) {
          void this.ctr(['containers', 'rm', id], { allowFail: true });
          fail(new Error(`${argv.join(' ')} exited with ${code}:\n${stdout}${stderr}`));
        } else done(r);
      });
    });
    exit.catch(() => undefined);
    return { seen, exit };
  }

  /**
   * Restarts a server that died (e.g. a `pkill -x docker-registry` elsewhere on the machine) and
   * says which; the registry's storage and the repository are on disk, so nothing is lost.
   */
  async ensureServers(): Promise<string[]> {
    this.o.cleanup.checkInterrupted();
    const restarted: string[] = [];
    for (const d of [this.registry, this.serve, this.proxy]) if (await d.ensureRunning()) restarted.push(d.name);
    if (restarted.length > 0) this.o.log(`restarted ${restarted.join(', ')} (it had exited)`);
    return restarted;
  }

  async snapshot(): Promise<Snapshot> {
    return { link: await this.link.counters(), requests: this.requests() };
  }

  requests(): RequestCounts {
    return { registry: countAccessLines(this.registry.log()), cvmfs: countAccessLines(this.serve.log()) };
  }

  /** Drops the page cache, dentries and inodes, then re-reads the container runtime's binaries:
   *  "page cache dropped" is about the image's files, not about ctr and runc. */
  async dropCaches(): Promise<void> {
    await run(['sync']);
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    for (const f of [...TOOLCHAIN, process.execPath]) await readFile(f).catch(() => undefined);
  }

  isMounted(): boolean {
    return mountsUnder(this.cvmfsRoot).includes(this.mountpoint);
  }

  /** Mounted, and with these parameters (default: none, i.e. the configuration's defaults). */
  isMountedWith(params: MountParameters = {}): boolean {
    return this.isMounted() && sameParameters(this.mountParams, params);
  }

  /**
   * `cvmfs-ts mount` in the client namespace, with `params` overriding the configuration (`-o`);
   * resolves with the seconds it took.
   */
  async mountRepository(params: MountParameters = {}): Promise<number> {
    await mkdir(this.mountpoint, { recursive: true });
    const o = Object.entries(params).map(([k, v]) => `${k}=${v}`);
    const t0 = performance.now();
    await run(
      [
        ...this.link.enter('client'),
        process.execPath,
        BIN,
        'mount',
        FQRN,
        this.mountpoint,
        '--config-root',
        this.configRoot,
        '--log',
        join(this.o.workDir, 'mount.log'),
        ...(o.length ? ['-o', o.join(',')] : []),
      ],
      { timeoutMs: 120_000 },
    );
    this.mountParams = { ...params };
    const seconds = (performance.now() - t0) / 1000;
    const pid = await getAttribute(this.mountpoint, 'user.pid').catch(() => null);
    this.mountPid = Number(pid?.toString()) || 0;
    return seconds;
  }

  async unmountRepository(): Promise<void> {
    if (this.isMounted()) {
      const r = await run(['umount', this.mountpoint], { allowFail: true });
      if (r.code !== 0) await run(['umount', '-l', this.mountpoint], { allowFail: true });
    }
    const pid = this.mountPid;
    this.mountPid = 0;
    if (pid) {
      const alive = () => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      await waitFor('the cvmfs-ts mount daemon to exit', () => !alive(), 15_000).catch(() => process.kill(pid, 'SIGKILL'));
    }
  }

  /** Empties the client cache (the repository must be unmounted). */
  async wipeCache(): Promise<void> {
    if (this.isMounted()) throw new Error('wipeCache with the repository mounted');
    await rm(this.cacheBase, { recursive: true, force: true });
    await mkdir(this.cacheBase, { recursive: true });
  }

  /** Creates link, servers, repository (cached), registry content and containerd. */
  static async create(o: EnvironmentOptions): Promise<Environment> {
    const { cleanup, log } = o;
    await cleanupLeftovers(o.workDir, o.prefix, log);
    await rm(o.workDir, { recursive: true, force: true });
    await mkdir(o.workDir, { recursive: true });
    const repoDir = join(o.cacheDir, 'repo');
    const keysDir = join(o.cacheDir, 'keys');
    const containers = o.containers ?? true;
    await ingestAll(o, repoDir, keysDir);

    log(`link: ${o.rateMbit} Mbit/s, ${o.rttMs} ms RTT (namespaces ${o.prefix}-server, ${o.prefix}-client)`);
    const link = await createLink({ prefix: o.prefix, subnet: o.subnet, rateMbit: o.rateMbit });
    cleanup.add('network namespaces', () => link.remove());

    const regPort = REGISTRY_PORT + 1;
    const cvmfsPort = CVMFS_PORT + 1;
    const regStorage = join(o.cacheDir, 'registry');
    await mkdir(regStorage, { recursive: true });
    const regConfig = join(o.workDir, 'registry.yml');
    await writeFile(
      regConfig,
      [
        'version: 0.1',
        'log:',
        '  level: warn',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${regStorage}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: 127.0.0.1:${regPort}`,
        '  secret: cvmfs-ts-bench-container-start',
        '',
      ].join('\n'),
    );
    const server = link.enter('server');
    const listening = (port: number) => async () => (await run([...server, 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`], { allowFail: true })).code === 0;
    const registry = await startDaemon('docker-registry', [...server, '/usr/bin/docker-registry', 'serve', regConfig], {
      logFile: join(o.workDir, 'registry.log'),
      cleanup,
      ready: listening(regPort),
    });
    const serve = await startDaemon('cvmfs-ts serve', [...server, process.execPath, BIN, 'serve', repoDir, '--host', '127.0.0.1', '--port', String(cvmfsPort), '--prefix', `/cvmfs/${FQRN}`], {
      logFile: join(o.workDir, 'serve.log'),
      cleanup,
      ready: (text) => text.includes('serving '),
    });
    const proxy = await startDaemon(
      'delay proxy',
      [
        ...server,
        ...delayProxyArgv([
          '--rtt-ms',
          String(o.rttMs),
          '--map',
          `${link.server.ip}:${REGISTRY_PORT}=127.0.0.1:${regPort}`,
          '--map',
          `${link.server.ip}:${CVMFS_PORT}=127.0.0.1:${cvmfsPort}`,
        ]),
      ],
      { logFile: join(o.workDir, 'proxy.log'), cleanup, ready: (text) => text.includes('ready'), cwd: ROOT },
    );

    // Registry content, pushed inside the server namespace (not over the link).
    for (const image of containers ? o.images : []) {
      const copy = (from: string, to: string) =>
        run([...server, 'skopeo', '--insecure-policy', 'copy', '--quiet', '--dest-tls-verify=false', from, `docker://127.0.0.1:${regPort}/bench/${image.name}:${to}`], { timeoutMs: 600_000 });
      await copy(`oci:${image.layout}:${image.tag}`, 'latest');
      await copy(`oci:${join(o.cacheDir, 'thin', image.name, 'thin-image')}:latest`, 'thin');
    }

    const configRoot = join(o.workDir, 'etc-cvmfs');
    const cacheBase = join(o.workDir, 'cache');
    const cvmfsRoot = join(o.workDir, 'cvmfs');
    await mkdir(join(configRoot, 'config.d'), { recursive: true });
    await mkdir(cacheBase, { recursive: true });
    await mkdir(cvmfsRoot, { recursive: true });
    const metricsSockets = o.metrics === false ? undefined : socketPaths(o.workDir, o.prefix);
    await writeFile(
      join(configRoot, 'default.local'),
      [
        'CVMFS_HTTP_PROXY=DIRECT',
        `CVMFS_CACHE_BASE=${cacheBase}`,
        'CVMFS_QUOTA_LIMIT=20000',
        ...(metricsSockets ? [`CVMFS_TS_METRICS_LISTEN=${metricsSockets.mount}`] : []),
        '',
      ].join('\n'),
    );
    await writeFile(
      join(configRoot, 'config.d', `${FQRN}.conf`),
      [`CVMFS_SERVER_URL=http://${link.server.ip}:${CVMFS_PORT}/cvmfs/@fqrn@`, `CVMFS_PUBLIC_KEY=${keyFiles(FQRN, keysDir).masterPublicKey}`, ''].join('\n'),
    );

    // Registered before containerd, so it runs after containerd's teardown (LIFO).
    cleanup.add('repository mount', async () => {
      for (const mp of mountsUnder(cvmfsRoot)) await run(['umount', '-l', mp], { allowFail: true });
    });

    const profiles = new Map<string, ProfileInfo>();
    const env0 = (c: ContainerdEnv | undefined) => new Environment(o, link, c, registry, serve, proxy, configRoot, cacheBase, cvmfsRoot, profiles, metricsSockets);
    await recordProfiles(env0(undefined), repoDir, keysDir, profiles);
    if (!containers) return env0(undefined);

    // containerd keeps its state in a temporary directory of the helper: put it on our disk.
    const tmp = process.env.TMPDIR;
    process.env.TMPDIR = o.workDir;
    process.env.CVMFS_TS_CONFIG_ROOT = configRoot; // for a mount the snapshotter would start itself
    let containerd: ContainerdEnv;
    try {
      containerd = await startContainerd(cleanup as unknown as Test, {
        cvmfsRoot,
        verbose: false,
        snapshotterArgs: metricsSockets ? ['--metrics-listen', metricsSockets.snapshotter] : [],
      });
    } finally {
      if (tmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = tmp;
    }
    log(`containerd at ${containerd.address}, namespace ${containerd.namespace}, snapshotter ${PROXY_NAME}`);
    return env0(containerd);
  }
}

/** This process and its ancestors (whose command lines may well name the work directory). */
function ourLineage(): Set<number> {
  const pids = new Set<number>();
  let pid = process.pid;
  while (pid > 1 && !pids.has(pid)) {
    pids.add(pid);
    try {
      pid = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[1]);
    } catch {
      break;
    }
  }
  return pids;
}

/** Pids of processes whose command line mentions `needle`, except ours and our ancestors. */
function pidsMentioning(needle: string): number[] {
  const pids: number[] = [];
  const lineage = ourLineage();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || lineage.has(Number(name))) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle)) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/**
 * What a killed bench run leaves behind, by name: processes in our namespaces or naming the work
 * directory (containerd, shims, snapshotter, mount daemons, servers), mounts under the work
 * directory (unmounted before anything is deleted there), and the namespaces with their veths.
 */
export async function cleanupLeftovers(workDir: string, prefix: string, log: (line: string) => void = () => undefined): Promise<void> {
  const victims = new Set<number>(pidsMentioning(workDir));
  for (const side of ['server', 'client']) {
    const r = await run(['ip', 'netns', 'pids', `${prefix}-${side}`], { allowFail: true });
    for (const p of r.stdout.split('\n').filter(Boolean)) victims.add(Number(p));
  }
  victims.delete(process.pid);
  if (victims.size > 0) log(`killing ${victims.size} leftover processes of an earlier run: ${[...victims].join(' ')}`);
  for (const pid of victims) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const mounts = mountsUnder(workDir);
  if (mounts.length > 0) log(`unmounting ${mounts.length} leftover mounts under ${workDir}`);
  for (let round = 0; round < 5 && mountsUnder(workDir).length > 0; round++) {
    for (const mp of mountsUnder(workDir)) await run(['umount', '-l', mp], { allowFail: true });
  }
  await removeLinkByPrefix(prefix);
}

/** `cvmfs-ts image ingest` of every image whose thin image is missing or stale. */
async function ingestAll(o: EnvironmentOptions, repoDir: string, keysDir: string): Promise<void> {
  if (!existsSync(keyFiles(FQRN, keysDir).masterPublicKey)) {
    await rm(keysDir, { recursive: true, force: true });
    await createKeys(FQRN, keysDir);
  }
  for (const image of o.images) {
    const out = join(o.cacheDir, 'thin', image.name);
    const stamp = join(out, 'source-manifest');
    const current = await readFile(stamp, 'utf8').catch(() => '');
    // A thin.json from before access profiles (no `profile` field) is ingested again.
    const hasProfileField = await readFile(join(out, 'thin.json'), 'utf8').then(
      (t) => (JSON.parse(t) as { profile?: unknown }).profile !== undefined,
      () => false,
    );
    if (current.trim() === image.manifestDigest && hasProfileField && existsSync(join(repoDir, '.cvmfspublished'))) continue;
    const started = performance.now();
    await rm(out, { recursive: true, force: true });
    await mkdir(out, { recursive: true });
    const staging = join(o.cacheDir, 'staging');
    await mkdir(staging, { recursive: true });
    await run([process.execPath, BIN, 'image', 'ingest', `oci:${image.layout}:${image.tag}`, '--repo', repoDir, '--fqrn', FQRN, '--keys', keysDir, '--output', out, '--staging', staging], {
      timeoutMs: 1_800_000,
    });
    await writeFile(stamp, `${image.manifestDigest}\n`);
    o.log(`ingested ${image.name} into ${repoDir} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  }
}

/**
 * `cvmfs-ts thin record` of every image whose profile the repository does not hold yet (marker
 * CACHE/thin/NAME/profile.json: manifest digest + PROFILE_FORMAT): the repository is mounted in the
 * client namespace with a cold cache and without profile prefetch, the image's task runs chrooted
 * in its thin mount (`thin record` in the client namespace: nsenter --net only, so the mount is the
 * one everybody sees), and the profile is published into the bench repository where thin.json names
 * it. The serve daemon serves the repository directory, so later mounts see the new revision.
 */
async function recordProfiles(env: Environment, repoDir: string, keysDir: string, into: Map<string, ProfileInfo>): Promise<void> {
  const { o } = env;
  const seconds = o.profileSeconds ?? 90;
  for (const image of o.images) {
    const marker = join(o.cacheDir, 'thin', image.name, 'profile.json');
    const known = await readFile(marker, 'utf8').then(
      (t) => JSON.parse(t) as ProfileInfo,
      () => undefined,
    );
    const thin = await env.thinImage(image);
    if (!thin.profile) throw new Error(`${env.thinJsonPath(image)} names no profile: ingest it again`);
    if (known && known.format === PROFILE_FORMAT && known.manifestDigest === image.manifestDigest && known.path === thin.profile.path) {
      into.set(image.name, known);
      o.log(`profile of ${image.name}: ${known.objects} objects, ${(known.bytes / 1e6).toFixed(2)} MB (recorded before, revision ${known.revision})`);
      continue;
    }
    const started = performance.now();
    await env.unmountRepository();
    await env.wipeCache();
    // No prefetch of an older profile while recording (the recorder notes readers' requests only,
    // but an empty cache keeps the timing of the recorded run honest).
    await env.mountRepository({ CVMFS_TS_PREFETCH: 'no' });
    const taskEnv = await imageEnv(image);
    let r: RunOutput;
    try {
      r = await run(
        [
          ...env.link.enter('client'),
          process.execPath,
          BIN,
          'thin',
          'record',
          env.thinJsonPath(image),
          '--cvmfs-root',
          env.cvmfsRoot,
          '--config-root',
          env.configRoot,
          '--state',
          join(o.workDir, 'thin-record'),
          '--repo',
          repoDir,
          '--fqrn',
          FQRN,
          '--keys',
          keysDir,
          '--seconds',
          String(seconds),
          ...taskEnv.flatMap((e) => ['--env', e]),
          '--',
          ...image.command,
        ],
        { timeoutMs: (seconds + 300) * 1000 },
      );
    } finally {
      await env.unmountRepository();
      await env.wipeCache();
    }
    const rec = /recorded (\d+) objects \((\d+) bytes\) in \d+ s window; command ended: ([^;\n]+)/.exec(r.stdout);
    const pub = /in revision (\d+)/.exec(r.stdout);
    if (!rec || !pub) throw new Error(`thin record of ${image.name}: unexpected output:\n${r.stdout}${r.stderr}`);
    const info: ProfileInfo = {
      format: PROFILE_FORMAT,
      manifestDigest: image.manifestDigest,
      path: thin.profile.path,
      objects: Number(rec[1]),
      bytes: Number(rec[2]),
      seconds,
      exit: rec[3]!.trim(),
      revision: Number(pub[1]),
      recordSeconds: Math.round((performance.now() - started) / 100) / 10,
    };
    if (!r.stdout.includes(image.expect)) o.log(`  warning: the recorded task of ${image.name} did not print ${JSON.stringify(image.expect)} (ended: ${info.exit})`);
    await writeFile(marker, `${JSON.stringify(info, null, 2)}\n`);
    into.set(image.name, info);
    o.log(
      `profile of ${image.name}: ${info.objects} objects, ${(info.bytes / 1e6).toFixed(2)} MB, task ended ${info.exit}, ` +
        `published in revision ${info.revision} (${info.recordSeconds} s)`,
    );
  }
}

/** The metrics sockets: in the work directory, unless that makes a path too long for a unix socket. */
function socketPaths(workDir: string, prefix: string): MetricsSockets {
  const dir = join(workDir, 'snapshotter-metrics.sock').length <= 100 ? workDir : '/run';
  const name = dir === workDir ? '' : `${prefix}-`;
  return { mount: join(dir, `${name}mount-metrics.sock`), snapshotter: join(dir, `${name}snapshotter-metrics.sock`) };
}

function sameParameters(a: MountParameters, b: MountParameters): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

/** `name value` lines → numbers; `yes`/`no` → 1/0; empty or other text left out. */
export function parseStatus(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+) (.*)$/.exec(line.trim());
    if (!m) continue;
    const v = m[2]!.trim();
    if (v === 'yes' || v === 'no') out[m[1]!] = v === 'yes' ? 1 : 0;
    else if (v !== '' && Number.isFinite(Number(v))) out[m[1]!] = Number(v);
  }
  return out;
}
