/**
 * An ordinary image through our snapshotter in a real containerd with runc: containers run, write
 * only to their upper directory, leave no mounts or directories behind once removed, and a
 * snapshotter killed with SIGKILL comes back with every snapshot usable.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { containerdMissing, startContainerd } from '../helpers/containerd';
import { busyboxEntries, file, writeOciArchive } from '../helpers/oci';

const IMAGE = 'example.org/cvmfs-ts/busybox:1';

async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return check();
}

t.test('ordinary image through the cvmfs-ts snapshotter', { skip: containerdMissing() }, async (t) => {
  const env = await startContainerd(t);
  const sn = ['--snapshotter', env.snapshotter];
  const archive = join(env.dir, 'image.tar');
  await writeOciArchive(archive, IMAGE, { layers: [{ entries: busyboxEntries() }, { entries: [file('hello.txt', 'hello from layer 2\n')] }] });
  // Not unpacked on import: `ctr run` unpacks it into our snapshotter.
  await env.ctr(['images', 'import', '--no-unpack', archive]);
  const snapshotDirs = () => readdir(join(env.snapshotterRoot, 'snapshots'));

  t.test('ctr run prints hello', async (t) => {
    const r = await env.ctr(['run', ...sn, '--rm', IMAGE, 'c1', 'busybox', 'echo', 'hello']);
    t.equal(r.stdout, 'hello\n');
    const committed = (await env.snapshots(['ls'])).stdout.split('\n').filter((l) => l.includes('Committed'));
    t.equal(committed.length, 2, 'two committed layers');
    t.same(env.mountsUnder(), [], 'no mount left by the removed container');
  });

  t.test("a container's writes land only in its upper dir", async (t) => {
    const r = await env.ctr(['run', ...sn, IMAGE, 'c2', 'sh', '-c', 'echo data > /written.txt && cat /hello.txt']);
    t.equal(r.stdout, 'hello from layer 2\n');
    const m = await env.mountOptions('c2');
    t.equal(m.type, 'overlay');
    const upper = m.options.find((o) => o.startsWith('upperdir='))!.slice('upperdir='.length);
    t.equal(await readFile(join(upper, 'written.txt'), 'utf8'), 'data\n');
    const elsewhere = [];
    for (const id of await snapshotDirs()) {
      const fs = join(env.snapshotterRoot, 'snapshots', id, 'fs');
      if (fs !== upper && existsSync(join(fs, 'written.txt'))) elsewhere.push(fs);
    }
    t.same(elsewhere, [], 'no other snapshot has the file');
    await env.ctr(['containers', 'rm', 'c2']);
    // containerd removes the snapshot from the backend in its garbage collection, soon after.
    t.ok(await eventually(() => !existsSync(join(upper, '..'))), 'the container snapshot directory is gone');
  });

  t.test('a running container has its overlay mount; removing it cleans up', async (t) => {
    await env.ctr(['run', ...sn, '-d', IMAGE, 'c3', 'sleep', '600']);
    const mounted = env.mountsUnder();
    t.equal(mounted.length, 1, 'one rootfs mount');
    t.match(mounted[0], /\/rootfs$/);
    await env.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'c3']);
    // Wait until the task is stopped, then delete task and container.
    for (let i = 0; i < 50; i++) {
      if ((await env.ctr(['tasks', 'rm', 'c3'], { allowFail: true })).code === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await env.ctr(['containers', 'rm', 'c3']);
    t.same(env.mountsUnder(), [], 'unmounted');
  });

  t.test('a snapshotter killed with SIGKILL comes back with its snapshots', async (t) => {
    const before = (await env.snapshots(['ls'])).stdout;
    await env.stopSnapshotter('SIGKILL');
    await env.startSnapshotter();
    t.equal((await env.snapshots(['ls'])).stdout, before, 'same snapshots');
    const r = await env.ctr(['run', ...sn, '--rm', IMAGE, 'c4', 'cat', '/hello.txt']);
    t.equal(r.stdout, 'hello from layer 2\n', 'another container on the same image');
  });

  t.test('removing the image removes its snapshots and directories', async (t) => {
    await env.ctr(['images', 'rm', '--sync', IMAGE]);
    t.equal((await env.snapshots(['ls'])).stdout.split('\n').filter((l) => l.trim()).length, 1, 'only the header line is left');
    t.same(await snapshotDirs(), [], 'no snapshot directories');
    t.same(await readdir(join(env.snapshotterRoot, 'l')), [], 'no links');
    t.same((await env.ctr(['content', 'ls', '-q'])).stdout, '', 'content garbage-collected');
    t.same(env.mountsUnder(), []);
  });
});
