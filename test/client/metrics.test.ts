/**
 * Prometheus metrics of a real mount (`cvmfs-ts mount` in its own process): CVMFS_TS_METRICS_LISTEN
 * on a free loopback port (port 0; the daemon logs the one it got) or a unix socket (given with -o);
 * every scrape must parse as the text format; reading through the mount moves the FUSE, cache and
 * download figures; a new revision moves the revision gauge. Without the parameter there is no
 * listener at all.
 */
import t, { type Test } from 'tap';
import { mkdir, readFile, readdir, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository, type TestMount } from '../helpers/mount';
import { serveRepository, type ServedRepository } from '../helpers/serve';
import { scrape, httpGet, type Scrape } from '../helpers/prom-text';

const FQRN = 'metrics.cvmfs.io';
const TTL_S = 2;

interface Fixture {
  dir: string;
  src: string;
  repoDir: string;
  keys: string;
  server: ServedRepository;
  republish(): Promise<void>;
}

async function fixture(t: Test): Promise<Fixture> {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(join(src, 'sub'), { recursive: true });
  await writeFile(join(src, 'a.txt'), 'file a\n'.repeat(1000));
  // Same content, so the same object: reading it after a.txt is a cache hit (a.txt itself would be
  // answered from the kernel's page cache without asking the daemon).
  await writeFile(join(src, 'a-copy.txt'), 'file a\n'.repeat(1000));
  await writeFile(join(src, 'b.txt'), 'file b\n'.repeat(3000));
  await writeFile(join(src, 'sub', 'c.txt'), 'file c\n');
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S });
  const server = await serveRepository(t, repoDir);
  return {
    dir,
    src,
    repoDir,
    keys,
    server,
    republish: async () => {
      await writeFile(join(src, 'new.txt'), 'revision two\n');
      await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S });
    },
  };
}

function mount(t: Test, f: Fixture, dir: string, extra: { config?: string[]; options?: string; serverUrl?: string } = {}): Promise<TestMount> {
  return mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: extra.serverUrl ?? f.server.url,
    publicKey: keyFiles(FQRN, f.keys).masterPublicKey,
    config: ['CVMFS_KCACHE_TIMEOUT=1', ...(extra.config ?? [])],
    options: extra.options,
  });
}

/** The address the daemon logged (`metrics at http://127.0.0.1:PORT/metrics`). */
async function metricsUrl(m: TestMount): Promise<string> {
  for (let i = 0; i < 50; i++) {
    const found = /metrics at (http:\/\/\S+\/metrics)/.exec(await m.log());
    if (found) return found[1];
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no metrics address in the log:\n${await m.log()}`);
}

/** Inodes of the TCP sockets the process `pid` has listening (/proc: no tool needed). */
async function listeningTcpInodes(pid: number): Promise<string[]> {
  const own = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) own.add(m[1]);
  }
  const listening: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === '0A' && own.has(cols[9])) listening.push(cols[9]); // st 0A = LISTEN
    }
  }
  return listening;
}

const delta = (before: Scrape, after: Scrape, name: string, labels?: Record<string, string>) => after.sum(name, labels) - before.sum(name, labels);

t.test('a mount serves metrics on a loopback port; reads and a new revision move them', async (t) => {
  const f = await fixture(t);
  const m = await mount(t, f, join(f.dir, 'm1'), { config: ['CVMFS_TS_METRICS_LISTEN=127.0.0.1:0'] });
  const url = await metricsUrl(m);
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  t.not(url, 'http://127.0.0.1:0/metrics');

  const s0 = await scrape({ url });
  t.pass(`first scrape: ${s0.samples.length} samples, every line valid exposition format`);
  t.equal(s0.get('cvmfs_ts_info', { repository: FQRN }), 1);
  t.equal(s0.get('cvmfs_ts_revision'), 1, 'revision gauge');
  t.equal(s0.get('cvmfs_ts_catalogs_loaded'), 1);
  t.equal(s0.types.get('cvmfs_ts_fuse_op_duration_seconds'), 'histogram');
  t.equal(s0.types.get('cvmfs_ts_download_attempts_total'), 'counter');
  t.ok(s0.get('cvmfs_ts_download_attempts_total', { host: f.server.url, proxy: 'DIRECT', outcome: 'ok' })! >= 1, 'the mount itself downloaded');
  t.ok(s0.get('process_resident_memory_bytes')! > 0, 'process metrics');
  for (const name of s0.types.keys()) {
    if (name.startsWith('cvmfs_ts_')) t.match(name, /_(total|seconds|bytes|info|revision|loaded|running|queued)$/, `${name}: unit or kind in its name`);
  }

  // Cold: a.txt is downloaded (miss); a-copy.txt, the same object: from the cache (hit).
  const a = await readFile(join(m.mountpoint, 'a.txt'), 'utf8');
  t.equal(a, 'file a\n'.repeat(1000));
  const s1 = await scrape({ url });
  t.ok(delta(s0, s1, 'cvmfs_ts_cache_misses_total') >= 1, 'a cache miss');
  t.ok(delta(s0, s1, 'cvmfs_ts_download_bytes_total', { host: f.server.url, proxy: 'DIRECT' }) > 0, 'download bytes by host and proxy');
  t.ok(delta(s0, s1, 'cvmfs_ts_cache_inserted_bytes_total') >= a.length, 'the file went into the cache');
  t.ok(delta(s0, s1, 'cvmfs_ts_fuse_ops_total', { op: 'open' }) >= 1, 'FUSE open counted');
  t.ok(delta(s0, s1, 'cvmfs_ts_fuse_ops_total', { op: 'read' }) >= 1, 'FUSE read counted');
  t.ok(delta(s0, s1, 'cvmfs_ts_fuse_op_duration_seconds_count', { op: 'read' }) >= 1, 'read latency observed');
  t.ok(s1.get('cvmfs_ts_fuse_op_duration_seconds_sum', { op: 'read' })! > 0);

  const hitsBefore = s1.sum('cvmfs_ts_cache_hits_total');
  t.equal(await readFile(join(m.mountpoint, 'a-copy.txt'), 'utf8'), a);
  await readFile(join(m.mountpoint, 'b.txt'));
  await stat(join(m.mountpoint, 'no-such-file')).catch(() => undefined);
  const s2 = await scrape({ url });
  t.ok(s2.sum('cvmfs_ts_cache_hits_total') > hitsBefore, 'a-copy.txt is a cache hit');
  t.ok(delta(s1, s2, 'cvmfs_ts_fuse_ops_total', { op: 'open' }) >= 2, 'two more opens');
  t.ok(s2.get('cvmfs_ts_fuse_errors_total', { op: 'getattr', errno: 'ENOENT' })! >= 1, 'ENOENT by errno');
  t.equal(s2.sum('cvmfs_ts_fuse_errors_total', { errno: 'EIO' }), 0, 'no EIO');
  t.equal(s2.sum('cvmfs_ts_failovers_total'), 0, 'no failover with one healthy server');
  t.ok(s2.get('cvmfs_ts_cache_size_bytes')! > 0, 'cache size from the quota ledger');
  t.equal(s2.get('cvmfs_ts_cache_limit_bytes'), 4000 * 1024 * 1024);

  await f.republish();
  let s3 = s2;
  for (let i = 0; i < 150 && s3.get('cvmfs_ts_revision') !== 2; i++) {
    await new Promise((r) => setTimeout(r, 100));
    s3 = await scrape({ url });
  }
  t.equal(s3.get('cvmfs_ts_revision'), 2, 'the revision gauge follows the update');
  t.equal(await m.xattr('', 'user.revision'), '2');
  t.equal((await httpGet({ url: url.replace(/\/metrics$/, '/') })).status, 404, 'only /metrics is served');

  await m.unmount();
  await t.rejects(httpGet({ url }), /ECONNREFUSED/, 'the listener goes with the daemon');
});

t.test('metrics on a unix socket (-o), a host failover, and none by default', async (t) => {
  const f = await fixture(t);
  const socket = join(f.dir, 'run', 'metrics.sock');
  await mkdir(join(f.dir, 'run'));
  // The first server refuses connections: the mount fails over to the second one.
  const dead = 'http://127.0.0.1:1';
  const m = await mount(t, f, join(f.dir, 'm2'), { options: `CVMFS_TS_METRICS_LISTEN=${socket}`, serverUrl: `"${dead};${f.server.url}"` /* quoted: ; ends a shell command */ });
  await readFile(join(m.mountpoint, 'sub', 'c.txt'));
  const s = await scrape({ socketPath: socket, path: '/metrics' });
  t.equal(s.get('cvmfs_ts_revision'), 1);
  t.ok(s.get('cvmfs_ts_fuse_ops_total', { op: 'open' })! >= 1);
  t.match(await m.log(), `metrics at unix:${socket}`);
  t.equal(s.get('cvmfs_ts_failovers_total', { kind: 'host' }), 1, 'one host failover');
  t.ok(s.get('cvmfs_ts_download_attempts_total', { host: dead, proxy: 'DIRECT', outcome: 'transfer_error' })! >= 1, 'the refused attempts, by host');
  t.ok(s.get('cvmfs_ts_download_attempts_total', { host: f.server.url, outcome: 'ok' })! >= 1);
  t.match(await m.log(), `warning: host ${dead} failed (`, 'the failover is logged as a warning');
  t.same(await listeningTcpInodes(m.pid), [], 'no TCP listener with a unix socket');

  const plain = await mount(t, f, join(f.dir, 'm3'));
  await readFile(join(plain.mountpoint, 'a.txt'));
  t.notMatch(await plain.log(), /metrics at|no metrics/, 'nothing about metrics in the log');
  t.same(await listeningTcpInodes(plain.pid), [], 'no TCP listener without CVMFS_TS_METRICS_LISTEN');

  await m.unmount();
  await t.rejects(stat(socket), /ENOENT/, 'the socket file is removed at unmount');
});
