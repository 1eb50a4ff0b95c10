/**
 * `cvmfs-ts` entry point: parses arguments and calls the modules. Errors end here as one
 * sentence on stderr and a non-zero exit status.
 */
import { Command, InvalidArgumentError, CommanderError, Option } from '@commander-js/extra-typings';
import { resolve } from 'node:path';
import { createKeys, keyFiles, loadPublicKeys } from '../publish/keys';
import type { ChunkSizes } from '../format/chunker';
import { startStaticServer } from '../serve/static-server';
import { inspect, formatReport } from '../inspect/inspect';
import { runDemo } from '../demo/run-demo';
import { runPublish } from './publish-command';
import { serveMount, mountInBackground } from './mount-command';
import { runCacheCommand } from './cache-command';
import { registerTalkCommand } from './talk-command';
import { registerConfigCommand } from './config-command';
import { runImageIngest } from './image-command';
import { runThinMount, runThinRecord, runThinUmount } from './thin-command';
import { runSnapshotter, DEFAULT_ROOT, DEFAULT_SOCKET } from './snapshotter-command';
import { CvmfsError, describeError } from '../errors';
import { VERSION } from '../version';

function parseInteger(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('not a whole number');
  return Number(value);
}

function parseChunkSizes(value: string): ChunkSizes {
  const parts = value.split(',').map((v) => v.trim());
  if (parts.length !== 3 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new InvalidArgumentError('expected MIN,AVG,MAX in bytes');
  }
  const [min, avg, max] = parts.map(Number) as [number, number, number];
  return { min, avg, max };
}

/** This program, to start its own serve/mount daemons. */
const BIN = resolve(__dirname, '../../bin/cvmfs-ts');

export function buildProgram(): Command {
  const program = new Command('cvmfs-ts')
    .description('CernVM-FS compatible publisher, server and tools')
    .version(VERSION)
    .showHelpAfterError();

  const keys = program.command('keys').description('repository keys');
  keys
    .command('create')
    .description('create master key, repository key and self-signed certificate')
    .argument('<fqrn>', 'repository name')
    .argument('<dir>', 'key directory (like /etc/cvmfs/keys)')
    .action(async (fqrn, dir) => {
      await createKeys(fqrn, dir);
      const f = keyFiles(fqrn, dir);
      process.stdout.write(`created ${f.masterKey}, ${f.masterPublicKey}, ${f.repositoryKey}, ${f.certificate}\n`);
    });

  program
    .command('publish')
    .description('publish SRC_DIR as the next revision of the repository in REPO_DIR')
    .argument('<fqrn>', 'repository name')
    .argument('<src>', 'source directory')
    .argument('<repo>', 'repository storage directory (served over HTTP)')
    .option('--keys <dir>', 'key directory', '/etc/cvmfs/keys')
    .option('--ttl <seconds>', 'catalog TTL', parseInteger)
    .option('--hash <algorithm>', 'sha1, rmd160 or shake128', 'sha1')
    .option('--chunk-sizes <min,avg,max>', 'content-defined chunk sizes in bytes (default 4/8/16 MiB)', parseChunkSizes)
    .option('--no-chunking', 'store every file as one object')
    .option('-X, --external', 'publish files as external data (served from CVMFS_EXTERNAL_URL, no data objects)')
    .action(async (fqrn, src, repo, o) => {
      await runPublish(fqrn, src, repo, o);
    });

  program
    .command('serve')
    .description('serve a repository directory over HTTP with CVMFS cache headers')
    .argument('<repo>', 'repository storage directory')
    .option('--port <port>', 'TCP port (0 = any free one)', parseInteger, 8000)
    .option('--host <address>', 'listen address', '127.0.0.1')
    .option('--prefix <path>', 'URL prefix, e.g. /cvmfs/example.org', '')
    .option('--quiet', 'no access log')
    .action(async (repo, o) => {
      const server = await startStaticServer({
        root: repo,
        host: o.host,
        port: o.port,
        urlPrefix: o.prefix || undefined,
        log: o.quiet ? undefined : (line) => process.stdout.write(line + '\n'),
      });
      process.stdout.write(`serving ${resolve(repo)} at ${server.url}\n`);
      await new Promise<void>((done) => {
        const stop = () => void server.close().then(done);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });

  program
    .command('inspect')
    .description('verify a repository and show its revision, catalogs and optionally a directory')
    .argument('<location>', 'repository URL (http://host/cvmfs/fqrn) or storage directory')
    .argument('[path]', 'repository path to list')
    .requiredOption('--fqrn <name>', 'repository name')
    .requiredOption('--key <file...>', 'master public key file(s)')
    .option('--check-objects', 'also fetch and hash-check every object and statistics counter')
    .option('--json', 'machine-readable output')
    .action(async (location, path, o) => {
      const report = await inspect({
        location,
        fqrn: o.fqrn,
        masterKeys: await loadPublicKeys(o.key),
        path,
        checkObjects: o.checkObjects,
      });
      process.stdout.write(o.json ? JSON.stringify(report, jsonReplacer, 2) + '\n' : formatReport(report));
    });

  program
    .command('mount')
    .description('mount a repository read-only with FUSE; returns once it is ready')
    .argument('<fqrn>', 'repository name')
    .argument('<mountpoint>', 'directory to mount on, e.g. /cvmfs/<fqrn>')
    .option('-o, --options <params>', 'CVMFS_* parameters, comma-separated PARAM=value, overriding the files')
    .option('--foreground', 'stay attached and log to stderr')
    .option('--config-root <dir>', 'configuration root instead of /etc/cvmfs (or $CVMFS_TS_CONFIG_ROOT)')
    .option('--log <file>', 'daemon log file (default /var/log/cvmfs-ts/<fqrn>.log)')
    .addOption(new Option('--ready-fd <fd>', 'internal: report readiness on this fd').argParser(parseInteger).hideHelp())
    .action(async (fqrn, mountpoint, o) => {
      if (o.foreground) await serveMount(fqrn, mountpoint, o);
      else await mountInBackground(fqrn, mountpoint, o, BIN);
    });

  const cache = program
    .command('cache')
    .description('inspect and manage a client cache directory (no mount needed; running mounts keep their pins)');
  const CACHE_DIR = ['--cache-dir <dir>', 'the cache directory (default: the one the configuration of FQRN names)'] as const;
  const CONFIG_ROOT = ['--config-root <dir>', 'configuration root instead of /etc/cvmfs (or $CVMFS_TS_CONFIG_ROOT)'] as const;
  const FQRN = ['[fqrn]', 'repository whose configuration names the cache (and whose breadcrumb resolves paths)'] as const;
  cache
    .command('size')
    .description('used, pinned and limit in MB')
    .argument(...FQRN)
    .option(...CACHE_DIR)
    .option(...CONFIG_ROOT)
    .option('--json', 'machine-readable output')
    .action((fqrn, o) => runCacheCommand('size', undefined, fqrn, o));
  cache
    .command('list')
    .description('cached objects, least recently used first: hash, size, type, pinned/held by, description')
    .argument(...FQRN)
    .option(...CACHE_DIR)
    .option(...CONFIG_ROOT)
    .option('--pinned', 'only pinned objects')
    .option('--catalogs', 'only catalogs')
    .option('--json', 'machine-readable output')
    .action((fqrn, o) => runCacheCommand('list', undefined, fqrn, o));
  for (const [action, description] of [
    ['evict', 'remove a file (all its chunks) or an object from the cache, unless pinned'],
    ['pin', 'pin a cached file or object until unpinned (never evicted)'],
    ['unpin', 'undo pin'],
  ] as const) {
    cache
      .command(action)
      .description(description)
      .argument('<target>', 'repository path (resolved through the cached catalogs) or object hash')
      .argument(...FQRN)
      .option(...CACHE_DIR)
      .option(...CONFIG_ROOT)
      .action((target, fqrn, o) => runCacheCommand(action, target, fqrn, o));
  }
  cache
    .command('wipe')
    .description('remove every object that is not pinned or held by a running mount')
    .argument(...FQRN)
    .option(...CACHE_DIR)
    .option(...CONFIG_ROOT)
    .action((fqrn, o) => runCacheCommand('wipe', undefined, fqrn, o));
  cache
    .command('rebuild')
    .description('reconcile the quota ledger (cachedb) with the files in the cache directory')
    .argument(...FQRN)
    .option(...CACHE_DIR)
    .option(...CONFIG_ROOT)
    .action((fqrn, o) => runCacheCommand('rebuild', undefined, fqrn, o));

  registerTalkCommand(program);
  registerConfigCommand(program);

  program
    .command('snapshotter')
    .description('run the containerd proxy snapshotter (thin images and CVMFS layers) until SIGTERM')
    .option('--socket <path>', 'unix socket to serve on (proxy_plugins address in containerd)', DEFAULT_SOCKET)
    .option('--root <dir>', 'metadata and snapshot directory', DEFAULT_ROOT)
    .option('--cvmfs-root <dir>', 'where repositories are mounted', '/cvmfs')
    .option('--repository <fqrn>', 'repository to look for remote layers in (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--verbose', 'log every call with its labels')
    .option('--metrics-listen <addr>', 'serve Prometheus metrics at /metrics on HOST:PORT or a unix socket path')
    .action(async (o) => runSnapshotter(o, BIN));

  const image = program.command('image').description('OCI images in a repository');
  image
    .command('ingest')
    .description('unpack an image\'s layers into a repository (one new revision) and write thin.json and the thin image')
    .argument('<source>', 'oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://HOST[:PORT]/NAME:TAG')
    .requiredOption('--repo <dir>', 'repository directory (as served)')
    .requiredOption('--fqrn <name>', 'repository name')
    .option('--keys <dir>', 'key directory', '/etc/cvmfs/keys')
    .requiredOption('--output <dir>', 'where thin.json and thin-image/ (OCI layout) go')
    .option('--tag <tag>', 'tag of the thin image in its layout', 'latest')
    .option('--push <reference>', 'also push the thin image to docker://HOST[:PORT]/NAME:TAG')
    .option('--plain-http', 'talk HTTP, not HTTPS, to registries (like skopeo --tls-verify=false on a local registry)')
    .option('--no-tls-verify', 'do not verify registry TLS certificates')
    .option('--staging <dir>', 'where layers are unpacked before publishing (default: the temp dir)')
    .option('--ttl <seconds>', 'catalog TTL', parseInteger)
    .option('--json', 'print the result as JSON')
    .action(async (source, o) => runImageIngest(source, o));

  const thin = program.command('thin').description('mount thin images: overlayfs over the layer directories in /cvmfs');
  thin
    .command('mount')
    .description('mount a thin image (thin.json, thin image layout or image reference) with a writable upper layer')
    .argument('<image>', 'thin.json, an OCI layout directory, or oci:/oci-archive:/docker-archive:/docker:// reference')
    .argument('<target>', 'directory to mount the root file system on')
    .option('--upper <dir>', 'directory for upper/ and work/ (default under the state directory)')
    .option('--state <dir>', 'state directory', '/var/lib/cvmfs-ts/thin')
    .option('--cvmfs-root <dir>', 'where repositories are mounted', '/cvmfs')
    .option('--config-root <dir>', 'client configuration root for repositories mounted on demand')
    .option('--json', 'print what was mounted as JSON')
    .action(async (imageArg, target, o) => runThinMount(imageArg, target, o, BIN));
  thin
    .command('umount')
    .description('unmount a thin image mount')
    .argument('<target>', 'the mounted directory')
    .option('--state <dir>', 'state directory', '/var/lib/cvmfs-ts/thin')
    .option('--clean', 'also delete its state and default upper directory')
    .action(async (target, o) => runThinUmount(target, o));
  thin
    .command('record')
    .description("run a command in a thin image and record which objects it reads in its first seconds (the image's access profile)")
    .argument('<image>', 'thin.json, an OCI layout directory, or an image reference (as for thin mount)')
    .argument('<command...>', 'the command and its arguments, after --')
    .option('--seconds <n>', 'recording window; the command is killed when it ends', parseInteger, 30)
    .option('--env <NAME=value>', 'environment of the command (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--output <file>', 'write the profile to this file')
    .option('--repo <dir>', 'publish the profile into this repository directory (where thin.json names it)')
    .option('--fqrn <name>', 'repository name (with --repo)')
    .option('--keys <dir>', 'key directory (with --repo)', '/etc/cvmfs/keys')
    .option('--state <dir>', 'state directory', '/var/lib/cvmfs-ts/thin')
    .option('--cvmfs-root <dir>', 'where repositories are mounted', '/cvmfs')
    .option('--config-root <dir>', 'client configuration root for repositories mounted on demand')
    .action(async (imageArg, command, o) => runThinRecord(imageArg, command, o, BIN));

  program
    .command('demo')
    .description('build, publish, serve, inspect and mount the built-in demo repository')
    .option('--dir <dir>', 'work directory (default: a temporary one)')
    .option('--mountpoint <dir>', 'where to mount the demo repository (default /cvmfs/demo.cvmfs-ts.io)')
    .option('--keep', 'keep the work directory, the server and the mount', false)
    .action(async (o) => runDemo({ ...o, bin: BIN }));

  return program;
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('hex') : v]));
  if (value && typeof value === 'object' && 'digest' in value && 'algorithm' in value) return String(value);
  return value;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram().exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
      return;
    }
    process.stderr.write(`cvmfs-ts: ${describeError(e)}\n`);
    if (process.env.CVMFS_TS_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    process.exitCode = CvmfsError.is(e, 'E_USAGE') ? 2 : 1;
  }
}

