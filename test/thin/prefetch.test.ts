/**
 * Access profiles end to end: `image ingest` names the profile in thin.json; `thin record` runs a
 * command chrooted in the thin-mounted image and publishes the objects it read; a later cold
 * `thin mount` attaches every layer catalog at once and prefetches the profile in the background,
 * and readers then find those objects in the cache (prefetch hits). With CVMFS_TS_PREFETCH=no and
 * CVMFS_TS_CATALOG_PREFETCH=no neither happens.
 */
import t, { type Test } from 'tap';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { tempDir, testKeys } from '../helpers/repo';
import { serveRepository } from '../helpers/serve';
import { mountDaemonPid, quietly, unmountDaemon, writeConfigRoot } from '../helpers/mount';
import { busyboxEntries, file, withParents, writeOciLayout } from '../helpers/oci';
import { parseThinJson, profilePath } from '../../src/image/thin-json';
import { parseAccessProfile } from '../../src/format/access-profile';
import { sendTalkThroughMount } from '../../src/thin/warm-up';

const FQRN = 'profiles.cvmfs-ts.test';
const DATA_FILES = 40;
const dataName = (i: number) => `data/f${String(i).padStart(3, '0')}`;
/** Distinct content per file (distinct objects), a few kB each. */
const dataContent = (i: number) => `${i}:`.repeat(500 + i);

/** `prefetch status` as a map of numbers (and yes/no strings). */
async function prefetchStatus(repoMount: string): Promise<Map<string, string>> {
  const text = await sendTalkThroughMount(repoMount, 'prefetch status');
  return new Map(text.trim().split('\n').map((l) => l.split(' ', 2) as [string, string]));
}

async function waitForPrefetch(t: Test, repoMount: string): Promise<Map<string, string>> {
  for (let i = 0; i < 200; i++) {
    const s = await prefetchStatus(repoMount);
    if (s.get('profiles_running') === '0') return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.fail('prefetch did not finish within 20 s');
  return prefetchStatus(repoMount);
}

t.test('thin record → profile in the repository → cold thin mount prefetches it', async (t) => {
  const work = await tempDir(t);
  const keys = await testKeys(FQRN);
  const repoDir = join(work, 'repo');
  const image = await writeOciLayout(join(work, 'image'), {
    tag: 'v1',
    // thin record runs the command with the image's environment and working directory.
    runConfig: { Env: ['PATH=/bin', 'EXTRA=/data/f020'], WorkingDir: '/data' },
    layers: [
      { compression: 'gzip', entries: busyboxEntries() },
      { compression: 'gzip', entries: withParents(Array.from({ length: DATA_FILES }, (_, i) => file(dataName(i), dataContent(i)))) },
    ],
  });
  const ingest = await runCli(['image', 'ingest', `oci:${image.dir}:v1`, '--repo', repoDir, '--fqrn', FQRN, '--keys', keys, '--output', join(work, 'out'), '--json'], { timeoutMs: 300_000 });
  t.equal(ingest.code, 0, ingest.stderr);
  const { thinImageDir, thinJsonPath } = JSON.parse(ingest.stdout) as { thinImageDir: string; thinJsonPath: string };
  const thin = parseThinJson(await readFile(thinJsonPath, 'utf8'));
  t.same(thin.profile, { repository: FQRN, path: profilePath(thin.layers.map((l) => l.digest)) }, 'thin.json names the profile, derived from the layers');

  const served = await serveRepository(t, repoDir);
  const cacheBase = join(work, 'cache');
  const spec = { fqrn: FQRN, serverUrl: served.url, publicKey: join(keys, `${FQRN}.pub`) };
  const cvmfsRoot = join(work, 'cvmfs');
  const repoMount = join(cvmfsRoot, FQRN);
  const state = join(work, 'state');
  const target = join(work, 'rootfs');
  let daemon = 0;
  const stopAll = async () => {
    quietly('umount', ['-l', target]);
    await unmountDaemon(repoMount, daemon || (await mountDaemonPid(repoMount)));
    daemon = 0;
  };
  t.teardown(stopAll);
  const coldMount = async (config: string[] = []) => {
    await stopAll();
    await rm(cacheBase, { recursive: true, force: true });
    const configRoot = await writeConfigRoot(work, { ...spec, config }, cacheBase);
    const r = await runCli(['thin', 'mount', thinImageDir, target, '--cvmfs-root', cvmfsRoot, '--config-root', configRoot, '--state', state], { timeoutMs: 120_000 });
    t.equal(r.code, 0, `thin mount: ${r.stderr}`);
    daemon = await mountDaemonPid(repoMount);
  };

  // Record: the command reads the first ten data files and $EXTRA (and runs busybox).
  const configRoot = await writeConfigRoot(work, spec, cacheBase);
  const record = await runCli(
    ['thin', 'record', thinImageDir, '--seconds', '20', '--cvmfs-root', cvmfsRoot, '--config-root', configRoot, '--state', state, '--repo', repoDir, '--fqrn', FQRN, '--keys', keys, '--', '/bin/sh', '-c', 'cat f00* "$EXTRA" > /dev/null && echo recorded'],
    { timeoutMs: 120_000 },
  );
  daemon = await mountDaemonPid(repoMount);
  t.equal(record.code, 0, `thin record: ${record.stderr}`);
  t.match(record.stdout, /recorded \d+ objects/);
  t.match(record.stdout, /published \/\.profiles\/.+ in revision 2/);

  await t.test('a cold thin mount attaches every layer catalog and prefetches the profile', async (t) => {
    await coldMount();
    const catalogs = await sendTalkThroughMount(repoMount, 'open catalogs');
    for (const l of thin.layers) t.match(catalogs, `/${l.path}`, `layer ${l.digest.slice(0, 12)}'s catalog is attached before anything was read`);
    const profile = parseAccessProfile(await readFile(join(repoMount, thin.profile!.path), 'utf8'));
    const paths = profile.objects.map((o) => o.path);
    const dataLayer = thin.layers[1]!.path;
    t.same(
      paths.filter((p) => p.includes('/data/')),
      [...Array.from({ length: 10 }, (_, i) => `${dataLayer}/${dataName(i)}`), `${dataLayer}/${dataName(20)}`],
      'the profile holds exactly the files the command read, in the order it read them (cwd and Env from the image config)',
    );
    t.ok(paths.includes(`${thin.layers[0]!.path}/bin/busybox`), 'and the program it ran');
    t.ok(paths.indexOf(`${thin.layers[0]!.path}/etc/passwd`) < paths.indexOf(`${thin.layers[0]!.path}/bin/busybox`), '/etc/passwd first, as a container runtime reads it');
    t.ok(paths.every((p) => p.startsWith('.layers/')), 'paths are repository paths: nothing of the recording machine');
    t.same(profile.command, ['/bin/sh', '-c', 'cat f00* "$EXTRA" > /dev/null && echo recorded']);

    const s = await waitForPrefetch(t, repoMount);
    t.equal(s.get('profile_objects'), String(profile.objects.length));
    t.equal(s.get('profile_objects_failed'), '0');
    // The profile file itself was read on demand; its objects came by prefetch.
    t.equal(Number(s.get('prefetch_downloads')), profile.objects.length, 'every profile object was downloaded by the prefetch');
    for (let i = 0; i < 10; i++) t.equal(await readFile(join(target, dataName(i)), 'utf8'), dataContent(i));
    const after = await prefetchStatus(repoMount);
    t.equal(Number(after.get('prefetch_hits')), 10, 'the ten reads were prefetch hits');
    t.equal(after.get('reader_misses_uncovered'), '0', 'no read had to download');
    t.equal(await readFile(join(target, dataName(30)), 'utf8'), dataContent(30));
    t.equal((await prefetchStatus(repoMount)).get('reader_misses_uncovered'), '1', 'a file outside the profile is a miss');
    t.equal(Number(after.get('prefetch_unread_bytes')), Number(after.get('prefetch_bytes')) - Number(after.get('prefetch_hit_bytes')), 'unread = fetched − used');
  });

  await t.test('CVMFS_TS_PREFETCH=no and CVMFS_TS_CATALOG_PREFETCH=no turn both off', async (t) => {
    await coldMount(['CVMFS_TS_PREFETCH=no', 'CVMFS_TS_CATALOG_PREFETCH=no']);
    const catalogs = await sendTalkThroughMount(repoMount, 'open catalogs');
    for (const l of thin.layers) t.notMatch(catalogs, `/${l.path}`, 'layer catalogs are attached only when overlayfs looks into them');
    const s = await prefetchStatus(repoMount);
    t.equal(s.get('prefetch_enabled'), 'no');
    t.equal(s.get('profiles_started'), '0');
    t.equal(s.get('prefetch_downloads'), '0');
    t.equal(await readFile(join(target, dataName(3)), 'utf8'), dataContent(3), 'the image still works');
  });
});
