/**
 * The snapshotter's metrics: in-process over the gRPC API (as service.test.ts, fake CVMFS root),
 * calls counted and timed by method and status, remote-layer hits and misses, thin image commits
 * and mounts, snapshots by kind; then `cvmfs-ts snapshotter --metrics-listen` serving them.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/repo';
import { snapshotsClient, status, type GrpcError } from '../helpers/snapshots-client';
import { parsePrometheusText, scrape } from '../helpers/prom-text';
import { runCli, BIN } from '../helpers/cli';
import { Snapshotter } from '../../src/snapshotter/snapshotter';
import { serveSnapshotter } from '../../src/snapshotter/grpc-server';
import { SnapshotterMetrics } from '../../src/metrics/snapshotter-metrics';
import { formatThinJson, layerPath } from '../../src/image/thin-json';
import { CRI_LAYER_DIGEST_LABEL, TARGET_LABEL } from '../../src/snapshotter/remote';

/** A repository directory with `n` unpacked layers (as service.test.ts makes them). */
async function fakeLayers(cvmfsRoot: string, repo: string, n: number): Promise<string[]> {
  const digests: string[] = [];
  for (let i = 0; i < n; i++) {
    const d = `${String(i).padStart(4, '0')}`.repeat(16);
    await mkdir(join(cvmfsRoot, repo, layerPath(d)), { recursive: true });
    await writeFile(join(cvmfsRoot, repo, layerPath(d), 'top'), `${i}\n`);
    digests.push(d);
  }
  return digests;
}

t.test('API calls, remote layers and thin images are counted', async (t) => {
  const dir = await tempDir(t, 'snap-metrics-');
  const cvmfsRoot = join(dir, 'cvmfs');
  await mkdir(cvmfsRoot);
  const metrics = new SnapshotterMetrics({ version: 'test', processMetrics: false });
  let starts = 0;
  const starter = metrics.timeRepositoryMounts(async () => {
    starts++;
    throw new Error('no such repository');
  });
  const sn = await Snapshotter.open({
    root: join(dir, 'root'),
    cvmfsRoot,
    repositories: ['layers.repo', 'missing.repo'],
    startRepository: starter,
    indexOff: true,
    events: metrics,
  });
  metrics.watch(() => sn.list([]));
  const socket = join(dir, 'snap.sock');
  const server = await serveSnapshotter(sn, socket, { metrics });
  const client = snapshotsClient(socket);
  t.teardown(async () => {
    client.close();
    await server.close();
    sn.close();
  });

  const digests = await fakeLayers(cvmfsRoot, 'layers.repo', 2);
  // A remote-layer hit (ALREADY_EXISTS) and a miss (an ordinary Prepare; missing.repo fails to mount).
  const hit = { [TARGET_LABEL]: 'sha256:chain0', [CRI_LAYER_DIGEST_LABEL]: `sha256:${digests[0]}` };
  const e = await client.prepare('extract-0', '', hit).catch((err: GrpcError) => err);
  t.equal((e as GrpcError).code, status.ALREADY_EXISTS);
  const miss = { [TARGET_LABEL]: 'sha256:chain9', [CRI_LAYER_DIGEST_LABEL]: `sha256:${'ef'.repeat(32)}` };
  await client.prepare('extract-9', '', miss);
  t.equal(starts, 1, 'the missing repository was tried once');
  // A thin image layer, committed, then mounted (Prepare) and viewed.
  const [bind] = await client.prepare('thin-key', '');
  await writeFile(join(bind!.source, 'thin.json'), formatThinJson('layers.repo', '', digests));
  await client.commit('thin', 'thin-key');
  await client.prepare('ctr', 'thin');
  await client.view('v', 'thin');
  await client.mounts('ctr');
  await client.stat('nope').catch(() => undefined);

  const s = parsePrometheusText(await metrics.registry.text());
  t.equal(s.get('cvmfs_ts_snapshotter_requests_total', { method: 'Prepare', code: 'OK' }), 3);
  t.equal(s.get('cvmfs_ts_snapshotter_requests_total', { method: 'Prepare', code: 'ALREADY_EXISTS' }), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_requests_total', { method: 'Stat', code: 'NOT_FOUND' }), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_request_duration_seconds_count', { method: 'Prepare' }), 4);
  t.ok(s.get('cvmfs_ts_snapshotter_request_duration_seconds_sum', { method: 'Prepare' })! > 0);
  t.equal(s.get('cvmfs_ts_snapshotter_remote_layer_lookups_total', { result: 'hit' }), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_remote_layer_lookups_total', { result: 'miss' }), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_thin_layers_committed_total'), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_mounts_total', { kind: 'active' }), 4, 'extract-9, thin-key, ctr, Mounts(ctr)');
  t.equal(s.get('cvmfs_ts_snapshotter_mounts_total', { kind: 'view' }), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_thin_image_mounts_total'), 3, 'ctr, v and Mounts(ctr) stack thin layers');
  t.equal(s.get('cvmfs_ts_snapshotter_repository_mounts_total', { outcome: 'failed' }), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_snapshots', { kind: 'committed' }), 2, 'the remote layer and the thin layer');
  t.equal(s.get('cvmfs_ts_snapshotter_snapshots', { kind: 'active' }), 2);
  t.equal(s.get('cvmfs_ts_snapshotter_snapshots', { kind: 'view' }), 1);
  for (const name of s.types.keys()) t.match(name, /^cvmfs_ts_snapshotter_/);
});

t.test('cvmfs-ts snapshotter --metrics-listen', async (t) => {
  const dir = await tempDir(t, 'snap-metrics-');
  const metricsSocket = join(dir, 'metrics.sock');
  const args = [BIN, 'snapshotter', '--socket', join(dir, 'snap.sock'), '--root', join(dir, 'root'), '--cvmfs-root', join(dir, 'cvmfs')];
  const child = spawn(process.execPath, [...args, '--metrics-listen', metricsSocket], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await new Promise<void>((done, fail) => {
    child.stdout.on('data', (d: Buffer) => (d.toString().includes('ready ') ? done() : undefined));
    void exited.then((code) => fail(new Error(`snapshotter exited with ${code}: ${stderr}`)));
  });
  const client = snapshotsClient(join(dir, 'snap.sock'));
  await client.prepare('a', '');
  client.close();
  const s = await scrape({ socketPath: metricsSocket, path: '/metrics' });
  t.equal(s.get('cvmfs_ts_snapshotter_requests_total', { method: 'Prepare', code: 'OK' }), 1);
  t.equal(s.get('cvmfs_ts_snapshotter_snapshots', { kind: 'active' }), 1);
  t.ok(s.get('process_cpu_user_seconds_total')! > 0, 'process metrics in the daemon');
  t.match(stderr, `metrics at unix:${metricsSocket}`);
  child.kill('SIGTERM');
  t.equal(await exited, 0);
  t.notOk(existsSync(metricsSocket), 'socket removed at exit');

  const bad = await runCli([...args.slice(1), '--metrics-listen', '9100']);
  t.not(bad.code, 0);
  t.match(bad.stderr, /--metrics-listen '9100': expected HOST:PORT/);
});
