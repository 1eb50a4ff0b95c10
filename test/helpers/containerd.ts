/**
 * A private containerd with our snapshotter, for end-to-end container tests.
 *
 *   const env = await startContainerd(t, { cvmfsRoot, repositories: ['fake.repo'] });
 *   await env.ctr(['images', 'import', archive]);            // in env.namespace
 *   const r = await env.ctr(['run', '--snapshotter', env.snapshotter, '--rm', image, 'c1', 'busybox', 'echo', 'hello']);
 *
 * Everything lives in one temporary directory (kept short: unix socket paths are limited to 107
 * bytes): containerd's root, state, config.toml and socket; the snapshotter's root, socket and log.
 * containerd is started with the CRI plugin disabled (it wants CNI and more) and our snapshotter as
 * the proxy plugin named env.snapshotter. The snapshotter runs as users run it, `node bin/cvmfs-ts
 * snapshotter` from the built dist (`npm run build` first), in its own process that a test may kill
 * and restart.
 *
 * Teardown (registered with t.teardown, so it also runs when the test fails): kill every task in
 * every namespace of this containerd, then the shims it started (found by our socket address in
 * their command line; killed by pid), the snapshotter and containerd; lazily unmount everything
 * under the temporary directory, deepest first; remove runc state and cgroups of our namespaces
 * and the temporary directory.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { BIN, type CliResult } from './cli';

export const PROXY_NAME = 'cvmfs-ts';

/** Why container tests cannot run here, or undefined when they can. */
export function containerdMissing(): string | undefined {
  if (process.getuid?.() !== 0) return 'containers need root';
  for (const tool of ['/usr/bin/containerd', '/usr/bin/ctr', '/usr/sbin/runc', '/usr/bin/containerd-shim-runc-v2', '/bin/busybox']) {
    if (!existsSync(tool)) return `${tool} is not installed`;
  }
  if (!readFileSync('/proc/filesystems', 'utf8').includes('overlay')) return 'no overlay file system';
  if (!existsSync(join(BIN, '../../dist/cli/main.js'))) return 'dist is not built (npm run build)';
  return undefined;
}

export interface RunResult extends CliResult {
  argv: string[];
}

export interface CtrOptions {
  /** Namespace (default env.namespace). */
  namespace?: string;
  /** Resolve with a failed result instead of throwing. */
  allowFail?: boolean;
  timeoutMs?: number;
  /** Run this binary instead of ctr (ctr-remote takes the same global flags). */
  binary?: string;
}

export interface ContainerdOptions {
  /** Where repositories are mounted for the snapshotter (--cvmfs-root). */
  cvmfsRoot?: string;
  /** --repository options (remote layers). */
  repositories?: string[];
  /** More snapshotter arguments. */
  snapshotterArgs?: string[];
  /** More environment for the snapshotter (e.g. CVMFS_TS_CONFIG_ROOT for the repositories it mounts). */
  snapshotterEnv?: NodeJS.ProcessEnv;
  /** Log every snapshotter call (default true: the labels are worth having when a test fails). */
  verbose?: boolean;
}

export interface ContainerdEnv {
  /** The temporary directory that holds everything. */
  readonly dir: string;
  /** containerd's gRPC socket (ctr -a). */
  readonly address: string;
  /** The default namespace of this test (unique, so runc state never collides); more namespaces
   *  for a test: `${env.namespace}-NAME` (teardown cleans up every namespace starting cvmfs-ts-). */
  readonly namespace: string;
  /** The proxy snapshotter's name in containerd (ctr --snapshotter). */
  readonly snapshotter: string;
  readonly snapshotterSocket: string;
  readonly snapshotterRoot: string;
  readonly configFile: string;
  /** Runs `ctr -a ADDRESS -n NS ARGS...`; throws with the output unless it exits 0 (or allowFail). */
  ctr(args: string[], o?: CtrOptions): Promise<RunResult>;
  /** `ctr snapshots --snapshotter cvmfs-ts ARGS...`. */
  snapshots(args: string[], o?: CtrOptions): Promise<RunResult>;
  /** The mount options containerd would use for snapshot KEY (parsed from `ctr snapshots mounts`). */
  mountOptions(key: string, o?: CtrOptions): Promise<{ type: string; options: string[] }>;
  /** Starts the snapshotter (again); resolves once containerd can reach it. */
  startSnapshotter(): Promise<void>;
  /** Kills the snapshotter process with `signal` and waits for it to exit. */
  stopSnapshotter(signal?: NodeJS.Signals): Promise<void>;
  snapshotterLog(): Promise<string>;
  containerdLog(): Promise<string>;
  /** Mount points under the temporary directory (or under `under`). */
  mountsUnder(under?: string): string[];
}

/** A process's exit, also when it already happened. */
function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => child.once('exit', () => done()));
}

async function killAndWait(child: ChildProcess | undefined, signal: NodeJS.Signals, graceMs = 5000): Promise<void> {
  if (!child || child.pid === undefined) return;
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(timer);
}

export function run(argv: string[], o: { allowFail?: boolean; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((done, fail) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d));
    child.stderr!.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      const r = { argv, code, stdout, stderr };
      if (code !== 0 && !o.allowFail) fail(new Error(`${argv.join(' ')} exited with ${code}:\n${stdout}${stderr}`));
      else done(r);
    });
  });
}

/** Mount points below `dir`, deepest first (from /proc/self/mountinfo; octal escapes decoded). */
export function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => unescape(l.split(' ')[4]!))
    .filter((mp) => mp === dir || mp.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

function unmountAll(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const mps = mountsUnder(dir);
    if (mps.length === 0) return;
    for (const mp of mps) {
      try {
        execFileSync('umount', ['-l', mp], { stdio: 'ignore' });
      } catch {
        // already gone with its parent
      }
    }
  }
}

/** Pids of processes whose command line contains `needle` (containerd's shims name our socket). */
function pidsWithArgument(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (argv.includes(needle)) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function containerdConfig(dir: string, snapshotterSocket: string): string {
  return [
    'version = 2',
    `root = "${dir}/containerd/root"`,
    `state = "${dir}/containerd/state"`,
    // CRI wants CNI, an image service and more; the block-device snapshotters only log failures.
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]',
    '',
    '[grpc]',
    `  address = "${dir}/containerd.sock"`,
    '[ttrpc]',
    `  address = "${dir}/containerd.sock.ttrpc"`,
    '',
    '[proxy_plugins]',
    `  [proxy_plugins.${PROXY_NAME}]`,
    '    type = "snapshot"',
    `    address = "${snapshotterSocket}"`,
    '',
  ].join('\n');
}

export async function startContainerd(t: Test, o: ContainerdOptions = {}): Promise<ContainerdEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'ctrd-'));
  const address = join(dir, 'containerd.sock');
  const snapshotterSocket = join(dir, 'snap.sock');
  const snapshotterRoot = join(dir, 'snap');
  const configFile = join(dir, 'config.toml');
  const namespace = `cvmfs-ts-${randomBytes(4).toString('hex')}`;
  await mkdir(join(dir, 'containerd'), { recursive: true });
  await writeFile(configFile, containerdConfig(dir, snapshotterSocket));

  let containerd: ChildProcess | undefined;
  let snapshotter: ChildProcess | undefined;

  // containerd's connection to a proxy plugin can be between dials (grpc backoff) on a loaded machine;
  // a call then fails at once with "connection error … unavailable" without reaching the snapshotter.
  // Such a call is repeated (at most twice); any other failure is the test's business.
  const ctr = async (args: string[], co: CtrOptions = {}): Promise<RunResult> => {
    const argv = [co.binary ?? 'ctr', '-a', address, '-n', co.namespace ?? namespace, ...args];
    for (let attempt = 0; ; attempt++) {
      const r = await run(argv, { allowFail: true, timeoutMs: co.timeoutMs });
      const transient = r.code !== 0 && /connection error.*unavailable/s.test(r.stdout + r.stderr);
      if (transient && attempt < 2) {
        await new Promise((res) => setTimeout(res, 1000));
        continue;
      }
      if (r.code !== 0 && !co.allowFail) throw new Error(`${argv.join(' ')} exited with ${r.code}:\n${r.stdout}${r.stderr}`);
      return r;
    }
  };

  async function startSnapshotter(): Promise<void> {
    const log = await open(join(dir, 'snapshotter.log'), 'a');
    const args = [BIN, 'snapshotter', '--socket', snapshotterSocket, '--root', snapshotterRoot];
    if (o.cvmfsRoot) args.push('--cvmfs-root', o.cvmfsRoot);
    for (const r of o.repositories ?? []) args.push('--repository', r);
    if (o.verbose ?? true) args.push('--verbose');
    args.push(...(o.snapshotterArgs ?? []));
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', log.fd], env: { ...process.env, ...o.snapshotterEnv } });
    snapshotter = child;
    await log.close();
    let out = '';
    await new Promise<void>((ready, fail) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d;
        if (out.includes('ready ')) ready();
      });
      child.once('exit', (code) => fail(new Error(`snapshotter exited with ${code}: ${readFileSync(join(dir, 'snapshotter.log'), 'utf8')}`)));
    });
    // containerd's gRPC client backs off after the old snapshotter went away; wait until it is through.
    await waitFor(
      'containerd to reach the snapshotter',
      async () => (await ctr(['snapshots', '--snapshotter', PROXY_NAME, 'ls'], { allowFail: true })).code === 0,
      60_000,
    );
  }

  async function stopSnapshotter(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await killAndWait(snapshotter, signal);
    snapshotter = undefined;
  }

  async function teardown(): Promise<void> {
    const namespaces = new Set([namespace]);
    const shimSockets: string[] = [];
    if (containerd && containerd.exitCode === null) {
      const listed = await ctr(['namespaces', 'ls', '-q'], { allowFail: true, timeoutMs: 10_000 });
      for (const ns of listed.stdout.split('\n').filter(Boolean)) namespaces.add(ns);
      for (const ns of namespaces) {
        const tasks = (await ctr(['tasks', 'ls', '-q'], { namespace: ns, allowFail: true, timeoutMs: 10_000 })).stdout.split('\n').filter(Boolean);
        for (const id of tasks) {
          shimSockets.push(shimSocket(address, ns, id));
          await ctr(['tasks', 'kill', '-a', '-s', 'SIGKILL', id], { namespace: ns, allowFail: true, timeoutMs: 10_000 });
          await ctr(['tasks', 'rm', '-f', id], { namespace: ns, allowFail: true, timeoutMs: 10_000 });
        }
      }
    }
    // Shims outlive containerd; each names our socket in its -address argument.
    for (const pid of pidsWithArgument(address)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await stopSnapshotter('SIGTERM');
    await killAndWait(containerd, 'SIGTERM');
    unmountAll(dir);
    // What a killed shim leaves: its socket, runc's state and the cgroups of our namespaces.
    for (const s of shimSockets) rmQuiet(s);
    for (const ns of namespaces) {
      if (!ns.startsWith('cvmfs-ts-')) continue; // only namespaces this helper named
      rmQuiet(`/run/containerd/runc/${ns}`);
      for (const ctl of safeReaddir('/sys/fs/cgroup')) {
        const base = join('/sys/fs/cgroup', ctl, ns);
        for (const c of safeReaddir(base)) rmdirQuiet(join(base, c));
        rmdirQuiet(base);
      }
    }
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
  t.teardown(teardown);

  const log = await open(join(dir, 'containerd.log'), 'a');
  containerd = spawn('/usr/bin/containerd', ['--config', configFile], { stdio: ['ignore', log.fd, log.fd] });
  await log.close();
  await waitFor('containerd', async () => (await ctr(['version'], { allowFail: true })).code === 0, 30_000);
  await startSnapshotter();

  return {
    dir,
    address,
    namespace,
    snapshotter: PROXY_NAME,
    snapshotterSocket,
    snapshotterRoot,
    configFile,
    ctr,
    snapshots: (args, co) => ctr(['snapshots', '--snapshotter', PROXY_NAME, ...args], co),
    async mountOptions(key, co) {
      // Prints "mount -t TYPE SOURCE TARGET -o OPT,OPT,...".
      const r = await ctr(['snapshots', '--snapshotter', PROXY_NAME, 'mounts', '/mnt', key], co);
      const m = /mount -t (\S+) \S+ \S+(?: -o (\S+))?/.exec(r.stdout);
      if (!m) throw new Error(`unexpected ctr snapshots mounts output: ${r.stdout}`);
      return { type: m[1]!, options: splitOptions(m[2] ?? '') };
    },
    startSnapshotter,
    stopSnapshotter,
    snapshotterLog: () => readFile(join(dir, 'snapshotter.log'), 'utf8'),
    containerdLog: () => readFile(join(dir, 'containerd.log'), 'utf8'),
    mountsUnder: (under) => mountsUnder(under ?? dir),
  };
}

/** Mount options joined by commas; lowerdir values contain ':' but never ','. */
function splitOptions(s: string): string[] {
  return s === '' ? [] : s.split(',');
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function rmdirQuiet(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // busy or gone
  }
}

function rmQuiet(path: string): void {
  try {
    execFileSync('rm', ['-rf', path], { stdio: 'ignore' });
  } catch {
    // nothing to remove
  }
}

/** The shim socket containerd 1.6 derives from its address, namespace and container id (for leftovers). */
export function shimSocket(address: string, namespace: string, id: string): string {
  return `/run/containerd/s/${createHash('sha256').update(join(address, namespace, id)).digest('hex')}`;
}
