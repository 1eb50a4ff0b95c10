/**
 * `cvmfs-ts demo`: the whole chain on a built-in tree — keys, publish, an HTTP server (its own
 * process, as in production), a verified inspect, and a FUSE mount at /cvmfs/<fqrn> that is
 * listed and read like any directory. Cleans up after itself unless --keep.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import { createKeys, keyFiles, loadPublicKeys } from '../publish/keys';
import { inspect, formatReport } from '../inspect/inspect';
import { runPublish } from '../cli/publish-command';
import { writeDemoTree } from './demo-tree';
import { CvmfsError } from '../errors';

export const DEMO_FQRN = 'demo.cvmfs-ts.io';

export interface DemoOptions {
  dir?: string;
  keep: boolean;
  mountpoint?: string;
  /** The cvmfs-ts executable, to start `serve` and `mount` as their own processes. */
  bin: string;
}

const say = (line = '') => process.stdout.write(`${line}\n`);

/** Starts `cvmfs-ts serve` and resolves with its base URL. */
function startServer(bin: string, repoDir: string, prefix: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [bin, 'serve', repoDir, '--port', '0', '--prefix', prefix, '--quiet'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  return new Promise((done, fail) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /serving .* at (http:\/\/\S+)/.exec(out);
      if (m) done({ url: m[1]!, child });
    });
    child.on('exit', (code) => fail(new CvmfsError('E_NETWORK', `the demo server exited (${code})`)));
  });
}

function run(bin: string, args: string[]): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: 'inherit' });
    child.on('exit', (code) => (code === 0 ? done() : fail(new CvmfsError('E_USAGE', `cvmfs-ts ${args[0]} failed (exit ${code})`))));
  });
}

function unmount(mountpoint: string): Promise<void> {
  return new Promise((done) => spawn('umount', [mountpoint], { stdio: 'ignore' }).on('exit', () => done()));
}

export async function runDemo(o: DemoOptions): Promise<void> {
  const fqrn = DEMO_FQRN;
  const base = o.dir ? resolve(o.dir) : await mkdtemp(join(tmpdir(), 'cvmfs-ts-demo-'));
  const source = join(base, 'source');
  const repoDir = join(base, 'repo');
  const keysDir = join(base, 'keys');
  const configRoot = join(base, 'etc-cvmfs');
  const mountpoint = resolve(o.mountpoint ?? `/cvmfs/${fqrn}`);
  let server: ChildProcess | undefined;
  let mounted = false;
  try {
    await unmount(mountpoint); // a mount left by an earlier `demo --keep`
    await rm(base, { recursive: true, force: true });
    say(`demo: building a source tree in ${source}`);
    await writeDemoTree(source);
    await createKeys(fqrn, keysDir);
    say(`demo: keys for ${fqrn} in ${keysDir}`);
    await runPublish(fqrn, source, repoDir, {
      keys: keysDir,
      hash: 'sha1',
      chunking: true,
      chunkSizes: { min: 256 * 1024, avg: 512 * 1024, max: 1024 * 1024 },
    });
    const started = await startServer(o.bin, repoDir, `/cvmfs/${fqrn}`);
    server = started.child;
    say(`demo: serving ${repoDir} at ${started.url}`);
    say();
    const report = await inspect({
      location: started.url,
      fqrn,
      masterKeys: await loadPublicKeys([keyFiles(fqrn, keysDir).masterPublicKey]),
      path: '/',
      checkObjects: true,
    });
    process.stdout.write(formatReport(report));
    say();

    await mkdir(join(configRoot, 'config.d'), { recursive: true });
    await writeFile(
      join(configRoot, 'config.d', `${fqrn}.conf`),
      [
        `CVMFS_SERVER_URL=${started.url.replace(fqrn, '@fqrn@')}`,
        `CVMFS_PUBLIC_KEY=${keyFiles(fqrn, keysDir).masterPublicKey}`,
        'CVMFS_HTTP_PROXY=DIRECT',
        `CVMFS_CACHE_BASE=${join(base, 'cache')}`,
        '',
      ].join('\n'),
    );
    await mkdir(mountpoint, { recursive: true });
    say(`demo: cvmfs-ts mount ${fqrn} ${mountpoint} --config-root ${configRoot}`);
    await run(o.bin, ['mount', fqrn, mountpoint, '--config-root', configRoot, '--log', join(base, 'mount.log')]);
    mounted = true;
    const attr = async (path: string, name: string) => (await getAttribute(join(mountpoint, path), name))?.toString() ?? '';
    say(`demo: mounted revision ${await attr('', 'user.revision')}, ${await attr('', 'user.nclg')} catalog loaded`);
    say(`demo: ls ${mountpoint}: ${(await readdir(mountpoint)).join('  ')}`);
    say(`demo: cat README: ${(await readFile(join(mountpoint, 'README'), 'utf8')).trim()}`);
    const big = await readFile(join(mountpoint, 'data', 'random-3M.bin'));
    const original = await readFile(join(source, 'data', 'random-3M.bin'));
    const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
    say(
      `demo: data/random-3M.bin: ${await attr('data/random-3M.bin', 'user.chunks')} chunks, md5 ${md5(big)} ` +
        `(${big.equals(original) ? 'same as the source' : 'DIFFERENT from the source'})`,
    );
    say(`demo: after reading: ${await attr('', 'user.nclg')} catalogs loaded, ${await attr('', 'user.ndownload')} downloads, ${await attr('', 'user.rx')} KiB received`);
    if (!big.equals(original)) throw new CvmfsError('E_HASH_MISMATCH', 'the mounted file differs from its source');
    say();
    say('demo: done');
  } finally {
    if (o.keep) {
      say(`demo: kept ${base}; ${mounted ? `${mountpoint} stays mounted (umount ${mountpoint}); ` : ''}server pid ${server?.pid}`);
      server?.unref();
    } else {
      if (mounted) await unmount(mountpoint);
      server?.kill('SIGTERM');
      await rm(base, { recursive: true, force: true });
    }
  }
}
