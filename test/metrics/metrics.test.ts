/**
 * The metrics building blocks in-process: listen addresses, the fast histogram, the mount's
 * families read from their sources, the /metrics server on TCP and on a unix socket (a stale
 * socket file is replaced, a live one is not taken over), and the strict parser the end-to-end
 * tests rely on (it must reject what a scraper would).
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseListenAddress, formatListenAddress } from '../../src/metrics/listen-address';
import { FastHistogram, MetricsRegistry } from '../../src/metrics/registry';
import { MountMetrics, errnoName, type MountMetricSources } from '../../src/metrics/mount-metrics';
import { startMetricsServer } from '../../src/metrics/server';
import { parsePrometheusText, scrape, httpGet } from '../helpers/prom-text';
import { tempDir } from '../helpers/repo';

t.test('listen addresses', async (t) => {
  t.same(parseListenAddress('127.0.0.1:9100'), { kind: 'tcp', host: '127.0.0.1', port: 9100 });
  t.same(parseListenAddress('localhost:0'), { kind: 'tcp', host: 'localhost', port: 0 });
  t.same(parseListenAddress('[::1]:9100'), { kind: 'tcp', host: '::1', port: 9100 });
  t.same(parseListenAddress('/run/cvmfs-ts//m.sock'), { kind: 'unix', path: '/run/cvmfs-ts/m.sock' });
  for (const bad of ['9100', '127.0.0.1', '127.0.0.1:70000', 'm.sock', 'http://127.0.0.1:9100', '::1:9100', '']) {
    t.equal(parseListenAddress(bad), undefined, `'${bad}' is refused`);
  }
  t.equal(formatListenAddress({ kind: 'tcp', host: '::1', port: 1 }), 'http://[::1]:1');
  t.equal(formatListenAddress({ kind: 'unix', path: '/x' }), 'unix:/x');
});

t.test('the parser rejects what a scraper would', async (t) => {
  const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="q\\"\\n\\\\"} 3\n\nb 1.5e-3 1700000000000\n';
  const s = parsePrometheusText(ok);
  t.equal(s.get('a_total', { y: 'q"\n\\' }), 3);
  t.equal(s.get('b'), 0.0015);
  for (const bad of [
    'a{x="1"} \n',
    'a{x=1} 2\n',
    'a{1x="1"} 2\n',
    'a{x="1",x="2"} 2\n',
    'a 1\na 2\n',
    '# TYPE a counter\n# TYPE a gauge\n',
    'a 1\n# TYPE a counter\n',
    '# TYPE a countr\n',
    'a one\n',
    'a 1',
    '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
  ]) {
    t.throws(() => parsePrometheusText(bad), JSON.stringify(bad));
  }
});

t.test('FastHistogram renders cumulative buckets, _sum and _count', async (t) => {
  const h = new FastHistogram('x_seconds', 'X\nwith a line break.', [0.1, 1, 0.01]);
  const a = h.child({ op: 'read' });
  h.child({ op: 'odd "one"' });
  for (const v of [0.005, 0.01, 0.05, 0.5, 5]) a.observe(v);
  const s = parsePrometheusText(h.render());
  t.equal(s.types.get('x_seconds'), 'histogram');
  t.same(
    ['0.01', '0.1', '1', '+Inf'].map((le) => s.get('x_seconds_bucket', { op: 'read', le })),
    [2, 3, 4, 5],
    'le is an upper bound, inclusive',
  );
  t.equal(s.get('x_seconds_count', { op: 'read' }), 5);
  t.equal(s.get('x_seconds_sum', { op: 'read' }), 0.005 + 0.01 + 0.05 + 0.5 + 5);
  t.equal(s.get('x_seconds_count', { op: 'odd "one"' }), 0, 'escaped label values');
});

t.test('mount metrics: FUSE ops and errors, downloads, and figures read at scrape time', async (t) => {
  const m = new MountMetrics({ fqrn: 'r.example.org', version: '9.9', fuseOps: ['getattr', 'read'], processMetrics: false });
  let s = parsePrometheusText(await m.registry.text());
  t.equal(s.get('cvmfs_ts_info', { repository: 'r.example.org', version: '9.9' }), 1);
  t.equal(s.get('cvmfs_ts_fuse_ops_total', { op: 'read' }), 0, 'every operation is exported from the start');
  t.equal(s.get('cvmfs_ts_revision'), 0, 'zero before the mount is built');
  t.equal(s.get('cvmfs_ts_failovers_total', { kind: 'host' }), 0);

  const getattr = m.fuseOp('getattr');
  getattr.record(0.00002, 0);
  getattr.record(0.00003, -2);
  getattr.record(0.2, -5);
  m.fuseOp('read').record(0.001, 0);
  t.throws(() => m.fuseOp('write'), /no metrics/);
  m.download({ host: 'http://h1/cvmfs/r', proxy: 'DIRECT', outcome: 'ok', bytes: 100, seconds: 0.02 });
  m.download({ host: 'http://h1/cvmfs/r', proxy: 'DIRECT', outcome: 'transfer_error', bytes: 7, seconds: 3 });
  const fetcher = { hits: 3, misses: 2, downloads: 2, bytesInflated: 4096 };
  const counters = { hostFailovers: 1, proxyFailovers: 2, retries: 4, failures: 1 };
  const sources: MountMetricSources = {
    revision: () => 42,
    loadedCatalogs: () => 3,
    fetcher,
    quota: { size: () => 1000, capacity: () => 2000, evictions: () => ({ objects: 5, bytes: 500 }) },
    downloaders: [{ counters }, { counters: { ...counters, hostFailovers: 10 } }],
  };
  m.watch(sources);
  s = parsePrometheusText(await m.registry.text());
  t.equal(s.get('cvmfs_ts_fuse_ops_total', { op: 'getattr' }), 3);
  t.equal(s.get('cvmfs_ts_fuse_op_duration_seconds_count', { op: 'getattr' }), 3);
  t.equal(s.get('cvmfs_ts_fuse_op_duration_seconds_bucket', { op: 'getattr', le: '0.000025' }), 1);
  t.equal(s.get('cvmfs_ts_fuse_errors_total', { op: 'getattr', errno: 'ENOENT' }), 1);
  t.equal(s.get('cvmfs_ts_fuse_errors_total', { op: 'getattr', errno: 'EIO' }), 1);
  t.equal(s.get('cvmfs_ts_download_attempts_total', { outcome: 'ok', proxy: 'DIRECT', host: 'http://h1/cvmfs/r' }), 1);
  t.equal(s.sum('cvmfs_ts_download_bytes_total'), 107);
  t.equal(s.get('cvmfs_ts_download_duration_seconds_count', { host: 'http://h1/cvmfs/r' }), 2);
  t.equal(s.get('cvmfs_ts_revision'), 42);
  t.equal(s.get('cvmfs_ts_catalogs_loaded'), 3);
  t.equal(s.get('cvmfs_ts_cache_hits_total'), 3);
  t.equal(s.get('cvmfs_ts_cache_misses_total'), 2);
  t.equal(s.get('cvmfs_ts_cache_inserted_bytes_total'), 4096);
  t.equal(s.get('cvmfs_ts_cache_size_bytes'), 1000);
  t.equal(s.get('cvmfs_ts_cache_limit_bytes'), 2000);
  t.equal(s.get('cvmfs_ts_cache_evictions_total'), 5);
  t.equal(s.get('cvmfs_ts_cache_evicted_bytes_total'), 500);
  t.equal(s.get('cvmfs_ts_failovers_total', { kind: 'host' }), 11, 'summed over both download managers');
  t.equal(s.get('cvmfs_ts_failovers_total', { kind: 'proxy' }), 4);
  t.equal(s.get('cvmfs_ts_download_retries_total'), 8);
  fetcher.hits = 10;
  s = parsePrometheusText(await m.registry.text());
  t.equal(s.get('cvmfs_ts_cache_hits_total'), 10, 'counters follow their source, not accumulate');
  for (const name of s.types.keys()) t.match(name, /^cvmfs_ts_/, `${name} is cvmfs_ts_*`);
  t.equal(errnoName(-2), 'ENOENT');
  t.equal(errnoName(-99999), '99999');
});

t.test('the /metrics server on TCP and on a unix socket', async (t) => {
  const registry = new MetricsRegistry(); // with the process metrics, as the daemons have them
  const tcp = await startMetricsServer({ kind: 'tcp', host: '127.0.0.1', port: 0 }, registry);
  t.teardown(() => tcp.close());
  t.match(tcp.address, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.not(tcp.address, 'http://127.0.0.1:0', 'the port actually bound');
  const s = await scrape({ url: `${tcp.address}/metrics` });
  t.ok(s.get('process_cpu_user_seconds_total')! >= 0, 'process metrics');
  t.equal((await httpGet({ url: `${tcp.address}/other` })).status, 404);
  t.equal((await httpGet({ url: `${tcp.address}/metrics` }, 'POST')).status, 405);
  const head = await httpGet({ url: `${tcp.address}/metrics` }, 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.body, '');

  const dir = await tempDir(t);
  const path = join(dir, 'm.sock');
  // A socket file whose server is gone (a killed daemon): replaced.
  execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(path)})`]);
  t.ok(existsSync(path));
  const unix = await startMetricsServer({ kind: 'unix', path }, registry);
  t.equal(unix.address, `unix:${path}`);
  t.ok((await scrape({ socketPath: path, path: '/metrics' })).samples.length > 0);
  await t.rejects(startMetricsServer({ kind: 'unix', path }, registry), /in use by another process/, 'a live socket is not taken over');
  await unix.close();
  t.notOk(existsSync(path), 'removed at close');
  await t.rejects(startMetricsServer({ kind: 'tcp', host: '127.0.0.1', port: Number(tcp.address.split(':')[2]) }, registry), /cannot listen/);
});
