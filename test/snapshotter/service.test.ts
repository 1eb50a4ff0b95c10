/**
 * The snapshotter's gRPC API as containerd's proxy uses it, method by method, with the status
 * codes containerd maps back to its errdefs; thin layers and remote layers over a fake CVMFS root
 * (plain directories, no FUSE). Runs in-process; container tests are in containerd-*.test.ts.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readlink, writeFile, stat, symlink, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/repo';
import { snapshotsClient, status, type GrpcError, type SnapshotsClient } from '../helpers/snapshots-client';
import { Snapshotter } from '../../src/snapshotter/snapshotter';
import { serveSnapshotter } from '../../src/snapshotter/grpc-server';
import { cliMountStarter, type MountStarter } from '../../src/snapshotter/repositories';
import { formatThinJson, layerPath } from '../../src/image/thin-json';
import { CRI_LAYER_DIGEST_LABEL, STARGZ_DIGEST_LABEL, TARGET_LABEL } from '../../src/snapshotter/remote';
import { mountsUnder } from '../helpers/containerd';

interface Env {
  dir: string;
  root: string;
  cvmfsRoot: string;
  socket: string;
  client: SnapshotsClient;
  starts: string[];
  /** Stops server and snapshotter (as a crash would leave the files) and starts them again. */
  restart(): Promise<void>;
}

async function start(t: Test, o: { repositories?: string[]; starter?: MountStarter } = {}): Promise<Env> {
  const dir = await tempDir(t, 'snap-');
  const root = join(dir, 'root');
  const cvmfsRoot = join(dir, 'cvmfs');
  await mkdir(cvmfsRoot);
  const socket = join(dir, 'snap.sock');
  const starts: string[] = [];
  const starter: MountStarter = async (repo, mp) => {
    starts.push(`${repo} ${mp}`);
    if (o.starter) await o.starter(repo, mp);
    else throw new Error('no such repository');
  };
  let stop = async () => {};
  const env: Env = {
    dir,
    root,
    cvmfsRoot,
    socket,
    starts,
    client: undefined as unknown as SnapshotsClient,
    async restart() {
      await stop();
      const sn = await Snapshotter.open({ root, cvmfsRoot, repositories: o.repositories, startRepository: starter, indexOff: true });
      const server = await serveSnapshotter(sn, socket);
      const client = snapshotsClient(socket);
      env.client = client;
      stop = async () => {
        client.close();
        await server.close();
        sn.close();
      };
    },
  };
  await env.restart();
  t.teardown(async () => {
    await stop();
    for (const mp of mountsUnder(dir)) execFileSync('umount', ['-l', mp]);
  });
  return env;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return status[(e as GrpcError).code] ?? String(e);
  }
}

function option(options: string[], name: string): string | undefined {
  return options.find((o) => o.startsWith(`${name}=`))?.slice(name.length + 1);
}

async function resolveLowers(lowerdir: string): Promise<string[]> {
  return Promise.all(lowerdir.split(':').map((l) => readlink(l)));
}

const fsOf = (root: string, id: number) => join(root, 'snapshots', String(id), 'fs');

t.test('prepare, commit, view and mounts follow the overlayfs snapshotter', async (t) => {
  const { client, root } = await start(t);
  const m1 = await client.prepare('a', '', { x: '1' });
  t.same(m1, [{ type: 'bind', source: fsOf(root, 1), target: '', options: ['rw', 'rbind'] }], 'no parent: rw bind of fs');
  t.ok((await stat(join(root, 'snapshots/1/work'))).isDirectory(), 'active has a work dir');
  await writeFile(join(fsOf(root, 1), 'base.txt'), 'base\n');
  t.same(await client.mounts('a'), m1, 'Mounts repeats Prepare');

  let info = await client.stat('a');
  t.equal(info.kind, 'ACTIVE');
  t.same(info.labels, { x: '1' });
  await client.commit('A', 'a', { y: '2' });
  info = await client.stat('A');
  t.match(info, { name: 'A', parent: '', kind: 'COMMITTED', labels: { y: '2' } }, 'commit replaces labels');
  t.equal(await code(client.stat('a')), 'NOT_FOUND', 'the active key is gone');

  const v1 = await client.view('v1', 'A');
  t.same(v1, [{ type: 'bind', source: fsOf(root, 1), target: '', options: ['ro', 'rbind'] }], 'view of one parent: ro bind of it');
  const v0 = await client.view('v0', '');
  t.same(v0[0]!.options, ['ro', 'rbind'], 'view without parent: ro bind of its own fs');

  const m2 = await client.prepare('b', 'A');
  t.equal(m2.length, 1);
  t.equal(m2[0]!.type, 'overlay');
  t.equal(m2[0]!.source, 'overlay');
  const o2 = m2[0]!.options;
  t.equal(o2[0], 'index=off');
  t.equal(option(o2, 'workdir'), join(root, 'snapshots/4/work'));
  t.equal(option(o2, 'upperdir'), fsOf(root, 4));
  t.same(await resolveLowers(option(o2, 'lowerdir')!), [fsOf(root, 1)], 'lowerdir is a short link to the parent fs');
  t.match(option(o2, 'lowerdir'), new RegExp(`^${root}/l/[a-z2-7]{10}$`));
  await client.commit('B', 'b');

  const m3 = await client.prepare('c', 'B');
  t.same(await resolveLowers(option(m3[0]!.options, 'lowerdir')!), [fsOf(root, 4), fsOf(root, 1)], 'nearest parent first');
  const v2 = await client.view('v2', 'B');
  t.same(v2[0]!.options.length, 2, 'view of two parents: index=off and lowerdir only');
  t.same(await resolveLowers(option(v2[0]!.options, 'lowerdir')!), [fsOf(root, 4), fsOf(root, 1)]);
  t.equal(await code(client.commit('V', 'v2')), 'FAILED_PRECONDITION', 'a view cannot be committed');

  // The mounts are real: overlay takes the options as they are.
  const target = join(root, '..', 'mnt');
  await mkdir(target);
  await writeFile(join(fsOf(root, 4), 'b.txt'), 'b\n');
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', m3[0]!.options.join(','), target]);
  try {
    await writeFile(join(target, 'c.txt'), 'c\n');
    t.same((await readdir(target)).sort(), ['b.txt', 'base.txt', 'c.txt']);
  } finally {
    execFileSync('umount', [target]);
  }
  t.same(await readdir(option(m3[0]!.options, 'upperdir')!), ['c.txt'], 'writes land in the upper dir only');
});

t.test('error codes containerd expects', async (t) => {
  const { client } = await start(t);
  await client.prepare('a', '');
  t.equal(await code(client.prepare('a', '')), 'ALREADY_EXISTS', 'prepare of a taken key');
  t.equal(await code(client.view('a', '')), 'ALREADY_EXISTS', 'view of a taken key');
  t.equal(await code(client.prepare('x', 'missing')), 'NOT_FOUND', 'missing parent');
  t.equal(await code(client.prepare('x', 'a')), 'INVALID_ARGUMENT', 'parent not committed');
  t.equal(await code(client.prepare('', '')), 'INVALID_ARGUMENT', 'empty key');
  t.equal(await code(client.commit('A', 'missing')), 'NOT_FOUND', 'commit of a missing key');
  await client.commit('A', 'a');
  t.equal(await code(client.commit('B', 'A')), 'FAILED_PRECONDITION', 'commit of a committed snapshot');
  await client.prepare('b', 'A');
  t.equal(await code(client.commit('A', 'b')), 'ALREADY_EXISTS', 'commit to a taken name');
  t.equal(await code(client.mounts('A')), 'FAILED_PRECONDITION', 'mounts of a committed snapshot');
  t.equal(await code(client.mounts('missing')), 'NOT_FOUND');
  t.equal(await code(client.remove('A')), 'FAILED_PRECONDITION', 'remove of a snapshot with children');
  t.equal(await code(client.remove('missing')), 'NOT_FOUND');
  t.equal(await code(client.stat('missing')), 'NOT_FOUND');
  t.equal(await code(client.update('missing', {})), 'NOT_FOUND');
  t.equal(await code(client.update('A', {}, ['parent'])), 'INVALID_ARGUMENT', 'only labels can change');
  t.equal(await code(client.usage('missing')), 'NOT_FOUND');
  t.equal(await code(client.list(['name=="unterminated'])), 'INVALID_ARGUMENT', 'bad filter');
  t.equal(await code(client.list(['labels.a~=('])), 'INVALID_ARGUMENT', 'bad regular expression');
  await client.remove('b');
  t.equal(await code(client.remove('A')), 'OK', 'removable once the child is gone');
});

t.test('update changes labels by field mask', async (t) => {
  const { client } = await start(t);
  await client.prepare('a', '', { keep: 'k', drop: 'd' });
  const before = await client.stat('a');
  await new Promise((r) => setTimeout(r, 5));
  let info = await client.update('a', { keep: 'new', add: 'a' }, ['labels.add', 'labels.drop']);
  t.same(info.labels, { keep: 'k', add: 'a' }, 'labels.KEY sets or (absent in info) removes one label');
  t.same(info.created_at, before.created_at, 'created unchanged');
  t.ok(Number(info.updated_at!.seconds) * 1e9 + info.updated_at!.nanos > Number(before.updated_at!.seconds) * 1e9 + before.updated_at!.nanos, 'updated moves');
  info = await client.update('a', { 'containerd.io/gc.root': 'x', 'a.b.c': 'dots' }, ['labels.a.b.c']);
  t.same(info.labels, { keep: 'k', add: 'a', 'a.b.c': 'dots' }, 'label keys may contain dots');
  info = await client.update('a', { only: 'this' });
  t.same(info.labels, { only: 'this' }, 'no mask replaces the labels');
  info = await client.update('a', { other: 'o' }, ['labels']);
  t.same(info.labels, { other: 'o' }, '"labels" replaces the labels');
  t.same((await client.stat('a')).labels, { other: 'o' }, 'persisted');
});

t.test('list streams every snapshot and applies containerd filters', async (t) => {
  const { client } = await start(t);
  await client.prepare('base-key', '', {});
  await client.commit('base', 'base-key', { [TARGET_LABEL]: 'sha256:aa', 'team.name': 'x' });
  await client.prepare('work', 'base', { role: 'container' });
  await client.view('look', 'base');
  for (let i = 0; i < 150; i++) await client.view(`many-${i}`, '');
  const names = async (filters: string[]) => (await client.list(filters)).map((i) => i.name).filter((n) => !n.startsWith('many-')).sort();
  t.equal((await client.list()).length, 153, 'all, across several stream messages');
  t.same(await names(['kind==committed']), ['base']);
  t.same(await names(['kind==active']), ['work']);
  t.same(await names([`labels."containerd.io/snapshot.ref"==sha256:aa,parent==""`]), ['base'], 'the filter containerd sends for remote snapshots');
  t.same(await names(['labels."containerd.io/snapshot.ref"==sha256:aa,parent=="base"']), []);
  t.same(await names(['parent==base']), ['look', 'work']);
  t.same(await names(['labels.role']), ['work'], 'presence');
  t.same(await names(['labels."team.name"==x']), ['base']);
  t.same(await names(['name~=^lo', 'kind==active']), ['look', 'work'], 'filters are ORed');
  t.same(await names(['name!=base,kind!=view']), ['work'], 'selectors are ANDed');
  t.same(await names(['']), ['base', 'look', 'work'], 'an empty filter matches all');
});

t.test('usage, remove and cleanup', async (t) => {
  const { client, root } = await start(t);
  await client.prepare('a', '');
  await writeFile(join(fsOf(root, 1), 'f'), Buffer.alloc(100_000, 1));
  await mkdir(join(fsOf(root, 1), 'd'));
  const u = await client.usage('a');
  t.ok(u.size >= 100_000, `size ${u.size}`);
  t.equal(u.inodes, 3, 'fs, f and d');
  await client.commit('A', 'a');
  t.same(await client.usage('A'), u, 'fixed at commit');
  await client.prepare('b', 'A');
  const lowerLinks = await readdir(join(root, 'l'));
  t.equal(lowerLinks.length, 1);
  t.same(await client.usage('b'), { size: 4096, inodes: 1 }, 'an empty upper dir');
  await client.remove('b');
  await client.remove('A');
  t.same(await readdir(join(root, 'snapshots')), [], 'directories removed');
  t.same(await readdir(join(root, 'l')), [], 'the link of A is removed with it');

  // Leftovers of a crash: a directory and a link no snapshot knows.
  await client.prepare('c', '');
  await mkdir(join(root, 'snapshots', '99', 'fs'), { recursive: true });
  await mkdir(join(root, 'snapshots', 'rm-7'), { recursive: true });
  await symlink('/nonexistent', join(root, 'l', 'stray'));
  await client.cleanup();
  t.same(await readdir(join(root, 'snapshots')), ['3'], 'only the live snapshot is left');
  t.same(await readdir(join(root, 'l')), []);
});

t.test('snapshots survive a restart', async (t) => {
  const env = await start(t);
  await env.client.prepare('a', '', { l: 'v' });
  await writeFile(join(fsOf(env.root, 1), 'f'), 'x');
  await env.client.commit('A', 'a');
  const before = await env.client.prepare('b', 'A');
  await env.restart();
  t.same(await env.client.mounts('b'), before, 'same mounts');
  t.equal((await env.client.stat('A')).kind, 'COMMITTED');
  t.same((await env.client.list()).map((i) => i.name).sort(), ['A', 'b']);
  await env.client.prepare('c', '');
  t.ok(existsSync(fsOf(env.root, 3)), 'ids keep counting');
});

/** A fake repository with `n` layers, layer i holding layers/<i> (and the base a marker). */
async function fakeLayers(cvmfsRoot: string, repo: string, n: number): Promise<string[]> {
  const digests: string[] = [];
  for (let i = 0; i < n; i++) {
    const d = `${String(i).padStart(4, '0')}`.repeat(16);
    const dir = join(cvmfsRoot, repo, layerPath(d));
    await mkdir(join(dir, 'layers'), { recursive: true });
    await writeFile(join(dir, 'layers', String(i)), `${i}\n`);
    await writeFile(join(dir, 'top'), `${i}\n`);
    digests.push(d);
  }
  return digests;
}

/** Commits a one-layer snapshot holding thin.json; returns its fs. */
async function commitThin(client: SnapshotsClient, key: string, name: string, thinJson: string): Promise<string> {
  const [bind] = await client.prepare(key, '');
  await writeFile(join(bind!.source, 'thin.json'), thinJson);
  await client.commit(name, key);
  return bind!.source;
}

t.test('thin image layers expand into CVMFS layer directories', async (t) => {
  const { client, root, cvmfsRoot, starts } = await start(t);
  const digests = await fakeLayers(cvmfsRoot, 'thin.repo', 3);
  await commitThin(client, 'thin-key', 'thin', formatThinJson('thin.repo', 'docker://x/y:1', digests));
  const m = await client.prepare('ctr', 'thin');
  const lowers = await resolveLowers(option(m[0]!.options, 'lowerdir')!);
  t.same(
    lowers,
    [...digests].reverse().map((d) => join(cvmfsRoot, 'thin.repo', layerPath(d))),
    'top layer first, the thin layer itself left out',
  );
  t.same(starts, [], 'a populated repository directory is not mounted again');

  // Layers above the thin layer stay above it.
  const upper = await client.prepare('up-key', 'thin');
  await writeFile(join(option(upper[0]!.options, 'upperdir')!, 'top'), 'above\n');
  await client.commit('up', 'up-key');
  const m2 = await client.prepare('ctr2', 'up');
  const lowers2 = await resolveLowers(option(m2[0]!.options, 'lowerdir')!);
  t.equal(lowers2.length, 4);
  t.equal(lowers2[0], fsOf(root, 3));

  const target = join(root, '..', 'mnt');
  await mkdir(target);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', m2[0]!.options.join(','), target]);
  try {
    t.same((await readdir(join(target, 'layers'))).sort(), ['0', '1', '2'], 'merged layers');
    t.equal(await readFile(join(target, 'top'), 'utf8'), 'above\n', 'upper layers win');
    t.notOk(existsSync(join(target, 'thin.json')), 'thin.json is not part of the root file system');
  } finally {
    execFileSync('umount', [target]);
  }

  // A view of a one-layer thin image is a ro bind of that layer.
  await commitThin(client, 'thin1-key', 'thin1', formatThinJson('thin.repo', '', digests.slice(0, 1)));
  t.same(await client.view('v', 'thin1'), [{ type: 'bind', source: join(cvmfsRoot, 'thin.repo', layerPath(digests[0]!)), target: '', options: ['ro', 'rbind'] }]);

  // A layer missing from the repository.
  await commitThin(client, 'bad-key', 'bad', formatThinJson('thin.repo', '', ['ab'.repeat(32)]));
  t.equal(await code(client.prepare('x', 'bad')), 'FAILED_PRECONDITION');
  t.equal(await code(client.stat('x')), 'NOT_FOUND', 'a snapshot that cannot be mounted is not kept');

  // An invalid thin.json makes an ordinary layer.
  const oddFs = await commitThin(client, 'odd-key', 'odd', '{"not":"thin"}');
  const m3 = await client.prepare('y', 'odd');
  t.same(await resolveLowers(option(m3[0]!.options, 'lowerdir')!), [oddFs]);
});

t.test('a repository that is not mounted is started', async (t) => {
  let populate: ((mp: string) => Promise<void>) | undefined;
  const env = await start(t, { starter: async (_repo, mp) => populate?.(mp) });
  const digests = ['cd'.repeat(32)];
  await commitThin(env.client, 'k', 'thin', formatThinJson('late.repo', '', digests));
  t.equal(await code(env.client.prepare('c1', 'thin')), 'UNAVAILABLE', 'starter did not make it appear');
  t.same(env.starts, [`late.repo ${join(env.cvmfsRoot, 'late.repo')}`], 'the starter got repository and mount point');
  populate = async (mp) => {
    await mkdir(join(mp, layerPath(digests[0]!)), { recursive: true });
  };
  const m = await env.client.view('c2', 'thin');
  t.equal(m[0]!.source, join(env.cvmfsRoot, 'late.repo', layerPath(digests[0]!)));
  t.equal(env.starts.length, 2);
});

t.test('60-layer thin image: short lowerdir, real mount', async (t) => {
  const { client, root, cvmfsRoot } = await start(t);
  const digests = await fakeLayers(cvmfsRoot, 'big.repo', 60);
  await commitThin(client, 'k', 'thin60', formatThinJson('big.repo', '', digests));
  const m = await client.prepare('ctr', 'thin60');
  const data = m[0]!.options.join(',');
  const lowerdir = option(m[0]!.options, 'lowerdir')!;
  t.equal(lowerdir.split(':').length, 60);
  const fullPaths = digests.map((d) => join(cvmfsRoot, 'big.repo', layerPath(d))).join(':');
  t.ok(fullPaths.length > 4096, `full paths would not fit (${fullPaths.length} bytes)`);
  t.ok(data.length < 3000, `mount data ${data.length} bytes`);
  const target = join(root, '..', 'mnt');
  await mkdir(target);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', data, target]);
  try {
    t.equal((await readdir(join(target, 'layers'))).length, 60);
    t.equal(await readFile(join(target, 'top'), 'utf8'), '59\n', 'the last layer is on top');
  } finally {
    execFileSync('umount', [target]);
  }
});

t.test('remote layers: a layer CVMFS holds becomes a committed snapshot', async (t) => {
  const { client, root, cvmfsRoot } = await start(t, { repositories: ['empty.repo', 'layers.repo'] });
  await mkdir(join(cvmfsRoot, 'empty.repo', 'x'), { recursive: true });
  const [d0, d1] = await fakeLayers(cvmfsRoot, 'layers.repo', 2);
  const labels0 = { [TARGET_LABEL]: 'sha256:chain0', [CRI_LAYER_DIGEST_LABEL]: `sha256:${d0}`, 'containerd.io/snapshot/cri.image-ref': 'x/y:1' };
  t.equal(await code(client.prepare('ns/1/extract-1 sha256:chain0', '', labels0)), 'ALREADY_EXISTS', 'Prepare answers ALREADY_EXISTS');
  t.equal(await code(client.stat('ns/1/extract-1 sha256:chain0')), 'NOT_FOUND', 'no active snapshot is left');
  const info = await client.stat('sha256:chain0');
  t.match(info, { name: 'sha256:chain0', parent: '', kind: 'COMMITTED', labels: labels0 });
  const found = await client.list([`labels."containerd.io/snapshot.ref"==sha256:chain0,parent==""`]);
  t.same(found.map((i) => i.name), ['sha256:chain0'], 'containerd finds it with its filter');
  t.same(await readdir(join(root, 'snapshots')), [], 'nothing stored locally');

  // stargz's label (ctr-remote rpull) on top of it.
  const labels1 = { [TARGET_LABEL]: 'sha256:chain1', [STARGZ_DIGEST_LABEL]: `sha256:${d1}` };
  t.equal(await code(client.prepare('ns/2/extract-2 sha256:chain1', 'sha256:chain0', labels1)), 'ALREADY_EXISTS');
  t.equal((await client.stat('sha256:chain1')).parent, 'sha256:chain0');
  t.same(await client.usage('sha256:chain1'), { size: 0, inodes: 0 }, 'uses no local disk');

  const m = await client.prepare('ctr', 'sha256:chain1');
  t.same(await resolveLowers(option(m[0]!.options, 'lowerdir')!), [d1, d0].map((d) => join(cvmfsRoot, 'layers.repo', layerPath(d))));

  // Asked again (another namespace): the same snapshot is found.
  t.equal(await code(client.prepare('ns2/1/extract-3 sha256:chain0', '', labels0)), 'ALREADY_EXISTS');
  t.equal((await client.list(['name~=chain0'])).length, 1);
  // The same target on a different parent gets a name of its own.
  await client.prepare('p', '');
  await client.commit('P', 'p');
  t.equal(await code(client.prepare('ns3/1/extract-4 sha256:chain0', 'P', labels0)), 'ALREADY_EXISTS');
  const both = await client.list([`labels."containerd.io/snapshot.ref"==sha256:chain0,parent==P`]);
  t.equal(both.length, 1);
  t.match(both[0]!.name, /^sha256:chain0@[0-9a-f]{12}$/);

  // A layer no repository has: an ordinary Prepare.
  const unknown = { [TARGET_LABEL]: 'sha256:chain9', [CRI_LAYER_DIGEST_LABEL]: `sha256:${'ef'.repeat(32)}` };
  const ordinary = await client.prepare('ns/9/extract-9 sha256:chain9', '', unknown);
  t.equal(ordinary[0]!.type, 'bind');

  // Removing the remote snapshot leaves the repository alone.
  await client.remove('ctr');
  await client.remove('sha256:chain1');
  t.ok(existsSync(join(cvmfsRoot, 'layers.repo', layerPath(d1))));
});

t.test('the default starter runs `BIN mount REPO MOUNTPOINT`', async (t) => {
  const dir = await tempDir(t, 'snap-');
  const bin = join(dir, 'fake-cvmfs-ts.js');
  // A stand-in for bin/cvmfs-ts: records its arguments; "mount bad.repo" fails like a real mount would.
  await writeFile(
    bin,
    `const [cmd, repo, mp] = process.argv.slice(2);
     if (repo === 'bad.repo') { process.stderr.write('cvmfs-ts: failed to load the configuration of bad.repo\\n'); process.exit(1); }
     require('fs').mkdirSync(mp + '/.layers', { recursive: true });
     require('fs').writeFileSync(mp + '/args', JSON.stringify([cmd, repo, mp]));`,
  );
  const start = cliMountStarter(bin);
  await start('good.repo', join(dir, 'good.repo'));
  t.same(JSON.parse(await readFile(join(dir, 'good.repo', 'args'), 'utf8')), ['mount', 'good.repo', join(dir, 'good.repo')]);
  await t.rejects(start('bad.repo', join(dir, 'bad.repo')), /exited with 1: cvmfs-ts: failed to load the configuration of bad.repo/);
});
