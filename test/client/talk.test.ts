/**
 * The control socket of a real mount (its daemon in its own process) and `cvmfs-ts talk` /
 * `cvmfs-ts config`: every command's answer, and that the changes take effect (another server,
 * proxies and timeouts in use, a cleaned cache, pins, a new revision, reset I/O error counter);
 * the socket is root only (mode 0600: uid 65534 is refused) and removed at unmount.
 */
import t, { type Test } from 'tap';
import { chmod, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { sendTalkCommand } from '../../src/client/talk';
import { STAT_HEADER } from '../../src/cli/config-command';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository, readDirect } from '../helpers/mount';
import { writeNestedTree } from '../helpers/trees';
import { serveRepository } from '../helpers/serve';
import { runCli } from '../helpers/cli';

const FQRN = 'talk.cvmfs.io';
const CHUNKS = { min: 64 * 1024, avg: 128 * 1024, max: 256 * 1024 };

t.test('talk and config on a mounted repository', async (t) => {
  const dir = await tempDir(t);
  await chmod(dir, 0o711); // others may traverse to the socket: its own mode must keep them out
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await writeNestedTree(src);
  await writeFile(join(src, 'via-second-server.txt'), 'fetched from the second server\n');
  await writeFile(join(src, 'via-direct.txt'), 'fetched after the dead proxy\n');
  await writeFile(join(src, 'broken.txt'), 'its object will be deleted from the server\n');
  const big = pseudoRandomBytes(1024 * 1024, 7);
  await writeFile(join(src, 'big.bin'), big);
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: 3600, chunking: CHUNKS });
  const first = await serveRepository(t, repoDir);
  const second = await serveRepository(t, repoDir);
  const cvmfsRoot = join(dir, 'cvmfs');
  const m = await mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: first.url,
    publicKey: keyFiles(FQRN, keys).masterPublicKey,
    config: ['CVMFS_QUOTA_LIMIT=100'],
    mountpoint: join(cvmfsRoot, FQRN),
  });
  const socket = join(m.cacheBase, 'shared', `cvmfs_io.${FQRN}`);
  const talk = (command: string) => sendTalkCommand(socket, command);
  const cli = (...args: string[]) => runCli(args, { timeoutMs: 60_000 });
  const inMount = (p: string) => join(m.mountpoint, p);

  await t.test('the socket', async (t) => {
    t.equal(await m.xattr('', 'user.talk_socket'), socket, 'named by user.talk_socket');
    const s = await stat(socket);
    t.ok(s.isSocket());
    t.equal(s.mode & 0o777, 0o600, 'mode 0600');
    t.equal(s.uid, 0, 'owned by root');
    const nobody = { prefix: ['setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups'], timeoutMs: 60_000 };
    let r = await runCli(['talk', '-p', socket, 'pid'], nobody);
    t.equal(r.code, 1, 'uid 65534 is refused');
    t.match(r.stderr, /permission denied/);
    t.equal(r.stdout, '');
    // Control: the file mode is what keeps it out.
    await chmod(socket, 0o666);
    r = await runCli(['talk', '-p', socket, 'pid'], nobody);
    await chmod(socket, 0o600);
    t.equal(r.stdout, `${m.pid}\n`, 'with mode 0666 it would get in');
  });

  await t.test('simple answers', async (t) => {
    t.equal(await talk('pid'), `${m.pid}\n`);
    t.match(await talk('version'), /^\d+\.\d+\.\d+\S* \(cvmfs-ts\)\n$/);
    t.equal(await talk('mountpoint'), `${m.mountpoint}\n`);
    t.equal(await talk('revision'), '1\n');
    const parameters = await talk('parameters');
    t.match(parameters, /^CVMFS_REPOSITORY_NAME=talk\.cvmfs\.io\n/);
    t.match(parameters, `\nCVMFS_SERVER_URL=${first.url}    # from ${join(m.configRoot, 'config.d', `${FQRN}.conf`)}\n`);
    t.match(parameters, `\nCVMFS_QUOTA_LIMIT=100    # from ${join(m.configRoot, 'config.d', `${FQRN}.conf`)}\n`);
    t.equal(await talk('frobnicate'), 'unknown command\n');
    t.equal(await talk('pid please'), 'unknown command\n', 'no argument where none is taken');
    t.equal(await talk('cleanup'), 'Usage: cleanup <MB>\n');
    t.equal(await talk('cleanup lots'), 'Usage: cleanup <MB>\n');
    t.equal(await talk('timeout set 1'), 'Usage: timeout set <proxy> <direct> (seconds, > 0)\n');
  });

  for (const p of ['a.txt', 'dir/b.txt', 'nested/c.txt', 'big.bin']) await readFile(inMount(p));
  const hash = async (p: string) => m.xattr(p, 'user.hash');
  const [hashA, hashB, hashC] = [await hash('a.txt'), await hash('dir/b.txt'), await hash('nested/c.txt')];
  const objectFile = (h: string) => join(m.cacheBase, 'shared', h.slice(0, 2), h.slice(2));
  const listed = async (command: string) => (await talk(command)).split('\n').filter((l) => l !== '');

  await t.test('catalogs and cache', async (t) => {
    t.equal(await talk('open catalogs'), '-> /\n    -> /nested\n');
    t.match(await talk('cache size'), /^Current cache size is \d+MB \(\d+ Bytes\), pinned: \d+MB \(\d+ Bytes\), limit: 100MB, objects: \d+\n$/);
    const all = await listed('cache list');
    t.ok(all.some((l) => l.startsWith(`${hashA} 7 regular - `) && l.endsWith('a.txt')), 'a.txt listed');
    const catalogs = await listed('cache list catalogs');
    t.equal(catalogs.length, 2, 'root and nested catalog');
    t.ok(catalogs.every((l) => / catalog held:\d+/.test(l) && l.includes(`held:${m.pid}`)), 'held by the daemon');

    // pin: a cached file, then one that has to be downloaded again after evict.
    t.equal(await talk('pin /dir/b.txt'), 'OK\n');
    t.equal(await talk('evict nested/c.txt'), 'OK\n');
    t.notOk(existsSync(objectFile(hashC)), 'evicted from the disk');
    t.equal(await talk('pin /nested/c.txt'), 'OK\n');
    t.ok(existsSync(objectFile(hashC)), 'pin downloads');
    const pinned = await listed('cache list pinned');
    t.ok(pinned.some((l) => l.startsWith(`${hashB} `) && l.includes(' pinned ')), 'b.txt pinned');
    t.ok(pinned.some((l) => l.startsWith(`${hashC} `) && l.includes(' pinned ')), 'c.txt pinned');
    t.notOk(pinned.some((l) => l.startsWith(`${hashA} `)), 'a.txt not pinned');

    t.equal(await talk('evict /a.txt'), 'OK\n');
    t.notOk(existsSync(objectFile(hashA)));
    t.notOk((await listed('cache list')).some((l) => l.startsWith(`${hashA} `)), 'gone from the list');
    t.equal(await talk('evict /dir/b.txt'), 'Not fully evicted (1 of 1 object(s) pinned or in use)\n');
    t.ok(existsSync(objectFile(hashB)), 'a pinned file stays');
    t.equal(await talk('evict /no/such/file'), 'No such regular file\n');
    t.equal(await talk('evict /dir'), 'No such regular file\n');
    t.equal(await talk('pin /no/such/file'), 'No such regular file or pinning failed\n');

    // cleanup 0: everything not pinned goes; the catalogs in use keep it from being complete.
    t.equal(await talk('cleanup 0'), 'Not fully cleaned (there might be pinned chunks)\n');
    const left = await listed('cache list');
    t.ok(left.length >= 4, `${left.length} pinned objects left`);
    t.ok(left.every((l) => l.split(' ')[3] !== '-'), 'only pinned or held objects are left');
    t.ok((await readDirect(inMount('big.bin'))).equals(big), 'evicted chunks are read again');
  });

  await t.test('hosts', async (t) => {
    t.equal(await talk('host info'), `  [0] ${first.url} (unprobed)\nActive host 0: ${first.url}\n`);
    t.equal(await talk(`host set ${second.url};${first.url}`), 'OK\n');
    t.equal(await talk('host info'), `  [0] ${second.url} (unprobed)\n  [1] ${first.url} (unprobed)\nActive host 0: ${second.url}\n`);
    t.equal(await m.xattr('', 'user.host'), second.url);
    const before = first.requests().length;
    t.equal(await readFile(inMount('via-second-server.txt'), 'utf8'), 'fetched from the second server\n');
    const objectName = (await hash('via-second-server.txt')).slice(2);
    const served = async () => {
      // The access log reaches us through the server's stdout: give it a moment.
      for (let i = 0; i < 40 && !second.requests().some((l) => l.includes(objectName)); i++) await new Promise((r) => setTimeout(r, 50));
      return second.requests().some((l) => l.includes(objectName));
    };
    t.ok(await served(), 'the object came from the second server');
    t.equal(first.requests().length, before, 'nothing asked of the first');
    t.equal(await talk('host switch'), 'OK\n');
    t.match(await talk('host info'), `Active host 1: ${first.url}\n`);
    t.equal(await talk('host set notaurl'), "Failed, not an http(s) URL: 'notaurl'\n");
    t.equal(await talk('host set'), 'Usage: host set <host list>\n');
  });

  await t.test('proxies and timeouts', async (t) => {
    t.equal(await talk('proxy info'), 'Load-balance groups:\n[0] DIRECT\nActive proxy: [0] DIRECT\n');
    t.equal(await talk('proxy set 127.0.0.1:1;DIRECT'), 'OK\n');
    t.equal(await talk('proxy info'), 'Load-balance groups:\n[0] http://127.0.0.1:1\n[1] DIRECT\nActive proxy: [0] http://127.0.0.1:1\n');
    t.equal(await readFile(inMount('via-direct.txt'), 'utf8'), 'fetched after the dead proxy\n', 'reads still work');
    t.match(await talk('proxy info'), /Active proxy: \[1\] DIRECT\n$/, 'the dead proxy was used and left');
    t.match(await talk('proxy set auto'), /^Failed, no valid proxies/);
    t.equal(await talk('proxy set DIRECT'), 'OK\n');
    t.equal(await talk('timeout info'), 'Timeout with proxy: 3s\nTimeout without proxy: 3s\n');
    t.equal(await talk('timeout set 7 9'), 'OK\n');
    t.equal(await talk('timeout info'), 'Timeout with proxy: 7s\nTimeout without proxy: 9s\n');
    t.equal(await m.xattr('', 'user.timeout'), '7');
    t.equal(await m.xattr('', 'user.timeout_direct'), '9');
  });

  const statRow = async (t: Test) => {
    const r = await cli('config', 'stat', FQRN);
    t.equal(r.code, 0, r.stderr);
    const [header, row, ...rest] = r.stdout.split('\n');
    t.equal(header, STAT_HEADER);
    t.same(rest, ['']);
    const values = row!.split(' ');
    return Object.fromEntries(STAT_HEADER.split(' ').map((name, i) => [name, values[i]]));
  };

  await t.test('I/O errors counted in stat, reset by talk', async (t) => {
    const brokenHash = await hash('broken.txt');
    const object = join(repoDir, 'data', brokenHash.slice(0, 2), brokenHash.slice(2));
    const bytes = await readFile(object);
    bytes[bytes.length >> 1] ^= 0x40; // bad data on every server
    await writeFile(object, bytes);
    await t.rejects(readFile(inMount('broken.txt')), { code: 'EIO' });
    const s = await statRow(t);
    t.ok(Number(s['NOIOERR']) >= 1, `NOIOERR ${s['NOIOERR']}`);
    t.equal(await talk('reset error counters'), 'OK\n');
    t.equal((await statRow(t))['NOIOERR'], '0');
  });

  await t.test('config stat', async (t) => {
    const s = await statRow(t);
    t.equal(s['PID'], String(m.pid));
    t.equal(s['REVISION'], '1');
    t.equal(s['NOCATALOGS'], '2');
    t.ok(Math.abs(Number(s['CACHEMAX(K)']) - 100 * 1024) <= 1, `CACHEMAX(K) ${s['CACHEMAX(K)']}: the quota, as df shows it`);
    t.ok(Number(s['CACHEUSE(K)']) > 0);
    t.ok(Number(s['MEM(K)']) > 0);
    t.ok(Number(s['NOFDUSE']) > 0 && Number(s['NOFDMAX']) >= Number(s['NOFDUSE']));
    t.equal(s['HOST'], first.url);
    t.equal(s['PROXY'], 'DIRECT');
    t.equal(s['ONLINE'], '1');
    const v = await cli('config', 'stat', '-v', FQRN);
    t.equal(v.code, 0, v.stderr);
    t.match(v.stdout, `\nPID: ${m.pid}\n`);
    t.match(v.stdout, /^Version: \S+\n/);
    t.match(v.stdout, `\nFile Catalog Revision: 1 (expires in `);
    const usage = /\nCache Usage: (\d+)k \/ (\d+)k\n/.exec(v.stdout);
    t.ok(usage && Math.abs(Number(usage[2]) - 100 * 1024) <= 1, 'Cache Usage: use / quota');
    t.match(v.stdout, `\nConnection: ${first.url} through proxy DIRECT (online)\n`);
    const missing = await cli('config', 'stat', 'not.mounted.io');
    t.equal(missing.code, 1);
    t.equal(missing.stdout, 'not.mounted.io not mounted\n');
  });

  await t.test('remount', async (t) => {
    t.equal(await talk('remount'), 'Catalog up to date\n');
    await rm(join(src, 'broken.txt'));
    await writeFile(join(src, 'added.txt'), 'new in revision two\n');
    await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: 3600, chunking: CHUNKS });
    t.equal(await talk('revision'), '1\n', 'a TTL of an hour: no update by itself');
    t.equal(await talk('remount sync'), 'New revision applied\n');
    t.equal(await talk('revision'), '2\n');
    t.equal(await m.xattr('', 'user.revision'), '2');
    t.equal(await readFile(inMount('added.txt'), 'utf8'), 'new in revision two\n');
    t.equal(await talk('remount sync'), 'Catalog up to date\n');
  });

  await t.test('cvmfs-ts talk', async (t) => {
    let r = await cli('talk', '-i', FQRN, '--config-root', m.configRoot, 'revision');
    t.same([r.code, r.stdout], [0, '2\n'], r.stderr);
    r = await cli('talk', '-i', FQRN, 'cache', 'list', 'pinned');
    t.equal(r.code, 0, `found through the mount without the configuration: ${r.stderr}`);
    t.ok(r.stdout.includes(hashB));
    r = await cli('talk', '-p', socket, 'pid');
    t.same([r.code, r.stdout], [0, `${m.pid}\n`], r.stderr);
    r = await cli('talk', '-i', FQRN, '--config-root', m.configRoot, 'frobnicate');
    t.same([r.code, r.stdout], [1, 'unknown command\n'], 'unknown command: exit 1');
    r = await cli('talk', 'pid');
    t.ok(r.stdout.includes(`${FQRN}:\n${m.pid}\n`), 'every mount, each after its name');
    r = await cli('talk', '-i', '*', 'revision');
    t.ok(r.stdout.includes(`${FQRN}:\n2\n`));
  });

  await t.test('cvmfs-ts config showconfig, probe, chksetup', async (t) => {
    const conf = join(m.configRoot, 'config.d', `${FQRN}.conf`);
    let r = await cli('config', 'showconfig', FQRN, '--config-root', m.configRoot);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^CVMFS_REPOSITORY_NAME=talk\.cvmfs\.io\n/);
    t.match(r.stdout, `\nCVMFS_SERVER_URL=${first.url}    # from ${conf}\n`);
    t.match(r.stdout, `\nCVMFS_CACHE_BASE=${m.cacheBase}    # from ${join(m.configRoot, 'default.local')}\n`);
    t.match(r.stdout, `\nCVMFS_CACHE_DIR=${join(m.cacheBase, 'shared')}\n`);
    t.match(r.stdout, '\nCVMFS_ROOT_HASH=\n', 'unset parameters listed');
    r = await runCli(['config', 'showconfig', '-s'], { env: { CVMFS_TS_CONFIG_ROOT: m.configRoot } });
    t.match(r.stdout, `\nRunning cvmfs-ts config showconfig -s ${FQRN}:\nCVMFS_REPOSITORY_NAME=${FQRN}\n`);
    t.notMatch(r.stdout, 'CVMFS_ROOT_HASH=');

    r = await cli('config', 'probe', FQRN, '--cvmfs-root', cvmfsRoot);
    t.same([r.code, r.stdout], [0, `Probing ${m.mountpoint}... OK\n`], r.stderr);
    r = await cli('config', 'probe', '--cvmfs-root', cvmfsRoot);
    t.same([r.code, r.stdout], [0, `Probing ${m.mountpoint}... OK\n`], 'every mount under the root');
    r = await cli('config', 'probe', FQRN, 'other.cvmfs.io', '--cvmfs-root', cvmfsRoot);
    t.same([r.code, r.stdout], [1, `Probing ${m.mountpoint}... OK\nProbing ${join(cvmfsRoot, 'other.cvmfs.io')}... Failed!\n`]);

    r = await cli('config', 'chksetup', '--config-root', m.configRoot, '--cvmfs-root', cvmfsRoot);
    t.same([r.code, r.stdout], [0, 'OK\n'], r.stderr);
    await writeFile(join(m.configRoot, 'config.d', 'broken.cvmfs.io.conf'), 'CVMFS_SERVER_URL=http://x/cvmfs/@fqrn@\nCVMFS_PUBLIC_KEY=/no/such.pub\n');
    r = await cli('config', 'chksetup', '--config-root', m.configRoot, '--cvmfs-root', join(dir, 'nowhere'));
    t.equal(r.code, 1);
    t.equal(
      r.stdout,
      `Error: mount root ${join(dir, 'nowhere')} is not a directory\n` +
        'Error: broken.cvmfs.io: public key /no/such.pub (CVMFS_PUBLIC_KEY in ' +
        `${join(m.configRoot, 'config.d', 'broken.cvmfs.io.conf')}) is not a readable file\n`,
    );
    r = await cli('config', 'chksetup', FQRN, '--config-root', m.configRoot, '--cvmfs-root', cvmfsRoot);
    t.same([r.code, r.stdout], [0, 'OK\n'], 'only the named repository');
  });

  await t.test('unmount removes the socket', async (t) => {
    await m.unmount();
    t.notOk(existsSync(socket));
    const r = await cli('talk', '-i', FQRN, '--config-root', m.configRoot, 'pid');
    t.equal(r.code, 1);
    t.match(r.stderr, /talk\.cvmfs\.io is not running/);
  });
});
