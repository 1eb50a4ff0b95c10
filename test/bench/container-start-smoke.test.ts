/**
 * bench/container-start end to end on a tiny busybox image, one run per mode, no timing
 * assertions: the emulated link, the servers behind it, every mode's container start, the records
 * and reports, and that nothing is left behind (namespaces, mounts, daemons).
 */
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { containerdMissing, mountsUnder } from '../helpers/containerd';
import { registryMissing } from '../helpers/registry';
import { tempDir } from '../helpers/repo';
import { busyboxEntries, writeOciLayout } from '../helpers/oci';
import { runContainerStart } from '../../bench/container-start/main';
import { MODES } from '../../bench/container-start/modes';
import type { BenchRecord } from '../../bench/container-start/bench';

function missing(): string | undefined {
  const why = containerdMissing() ?? registryMissing();
  if (why) return why;
  for (const tool of ['/usr/bin/nsenter', '/usr/sbin/tc', '/usr/sbin/ip']) if (!existsSync(tool)) return `${tool} is not installed`;
  return undefined;
}

const why = missing();
t.test('every mode starts a container over the emulated link', { skip: why ?? false, timeout: 600_000 }, async (t) => {
  const dir = await tempDir(t, 'cvmfs-ts-cs-smoke-');
  const layout = join(dir, 'oci');
  const img = await writeOciLayout(layout, { layers: [{ entries: busyboxEntries() }] });
  // Unique per process: two checkouts may run their suites at once (namespaces are machine-wide).
  const prefix = `cvbs${process.pid}`;
  const workDir = join(dir, 'work');
  const outDir = join(dir, 'out');
  const records: BenchRecord[] = await runContainerStart({
    images: [
      {
        name: 'busybox',
        layout,
        tag: img.tag,
        manifestDigest: img.manifestDigest,
        compressedBytes: img.layers.reduce((s, l) => s + l.size, img.configBytes.length + img.manifestBytes.length),
        unpackedBytes: img.layers.reduce((s, l) => s + l.tar.length, 0),
        command: ['echo', 'hello'],
        expect: 'hello',
        description: 'busybox; echo hello',
        layers: 1,
      },
    ],
    modes: MODES,
    runs: 1,
    rateMbit: 100,
    rttMs: 20,
    cacheDir: join(dir, 'cache'),
    workDir,
    outDir,
    prefix,
    subnet: `10.213.${100 + (process.pid % 150)}`,
    command: 'test/bench/container-start-smoke.test.ts',
    log: (l) => t.comment(l),
  });

  t.same(
    records.map((r) => r.mode),
    MODES.map((m) => m.name),
    'one record per mode',
  );
  for (const r of records) {
    t.notOk(r.error, `${r.mode}: no error`);
    t.equal(r.runs_s.length, 1, `${r.mode}: one run`);
    t.ok(r.median_s !== null && r.median_s > 0 && r.median_s === r.min_s && r.min_s === r.max_s, `${r.mode}: median = min = max of one run`);
  }
  const by = (mode: string) => records.find((r) => r.mode === mode)!;
  t.ok(by('full-pull').bytes_over_link! >= by('full-pull').image_compressed_bytes, 'a full pull moves at least the compressed image over the link');
  t.ok(by('full-pull').requests_registry! >= 3, 'a full pull asks the registry for manifest, config and layer');
  t.equal(by('full-pull').requests_cvmfs, 0, 'a full pull never asks the repository');
  t.ok(by('thin-cold').requests_cvmfs! > 0, 'a cold thin start fetches from the repository');
  t.ok(by('thin-cold').requests_registry! >= 3, 'a cold thin start pulls the thin image');
  t.ok(by('thin-cold').mount_s! > 0, 'the mount before the clock is recorded');
  t.ok(by('thin-cold-plain').requests_cvmfs! > 0, 'a plain cold thin start fetches from the repository');
  t.equal(by('thin-cold-plain').prefetch?.prefetch_enabled, 0, 'thin-cold-plain mounts with CVMFS_TS_PREFETCH=no');
  t.equal(by('thin-cold-plain').prefetch?.catalog_prefetch_enabled, 0, 'thin-cold-plain mounts with CVMFS_TS_CATALOG_PREFETCH=no');
  t.equal(by('thin-cold-plain').prefetch?.prefetch_bytes, 0, 'thin-cold-plain: nothing prefetched');
  const cold = by('thin-cold').prefetch!;
  t.equal(cold.prefetch_enabled, 1, 'thin-cold mounts with the defaults');
  t.equal(cold.profiles_started, 1, "the snapshotter's Prepare asked for the image's profile");
  t.ok(cold.profile_objects > 0 && cold.profile_objects_done === cold.profile_objects, 'the recorded profile names objects, all prefetched');
  t.equal(by('thin-cold').prefetch_runs?.length, 1, 'prefetch figures per run');
  for (const mode of ['local', 'thin-warm', 'thin-hot']) t.equal(by(mode).requests_cvmfs, 0, `${mode}: no repository request`);
  t.equal(by('local').bytes_over_link! < 10_000, true, 'local: (next to) nothing over the link');
  for (const mode of ['full-pull', 'local']) t.notOk(by(mode).breakdown, `${mode}: no breakdown (not through our daemons)`);
  for (const mode of ['thin-cold-plain', 'thin-cold', 'thin-warm', 'thin-hot']) {
    const b = by(mode).breakdown;
    t.ok(b && b.snapshotter_calls! > 0 && b.snapshotter_s! > 0, `${mode}: snapshotter calls and their time recorded`);
    t.ok(b && b.snapshotter_by_method && Object.keys(b.snapshotter_by_method).length > 0, `${mode}: snapshotter calls by method`);
    t.ok(b && b.fuse_ops !== undefined && b.fuse_daemon_s !== undefined && b.fuse_by_op, `${mode}: FUSE figures recorded`);
    t.equal(by(mode).breakdown_runs?.length, 1, `${mode}: breakdown per run`);
  }
  t.ok(by('thin-warm').breakdown!.fuse_ops! > 0, 'thin-warm: a fresh mount answers FUSE requests');
  t.ok(by('thin-cold').breakdown!.downloads! > 0 && by('thin-cold').breakdown!.download_s! > 0, 'thin-cold: downloads and their time recorded');
  t.equal(by('thin-hot').breakdown!.downloads, 0, 'thin-hot: no download');

  const json = JSON.parse(readFileSync(join(outDir, 'container-start.json'), 'utf8')) as BenchRecord[];
  t.same(
    json.map((r) => [r.image, r.mode]),
    records.map((r) => [r.image, r.mode]),
    'JSON written',
  );
  const md = readFileSync(join(outDir, 'container-start.md'), 'utf8');
  t.match(md, /\| busybox \| thin-hot \|/, 'Markdown table written');
  t.match(md, /\| busybox \| thin-cold \|[^\n]*\(\d+\/\d+ objects\)/, 'prefetch table written');
  t.match(md, /## Where the time goes[^]*\| busybox \| thin-warm \| [^\n]*\| \d[^|]* \(\d+: [^\n]*\|/, 'breakdown table written');
  t.match(readFileSync(join(outDir, 'container-start.svg'), 'utf8'), /^<svg /, 'SVG chart written');

  t.same(mountsUnder(workDir), [], 'nothing mounted under the work directory');
  t.notOk(existsSync(`/run/netns/${prefix}-server`) || existsSync(`/run/netns/${prefix}-client`), 'namespaces removed');
});
