/**
 * `cvmfs-ts config showconfig|probe|stat|chksetup`, as the same commands of cvmfs_config (§5.15).
 *
 * - showconfig [-s] [FQRN]: every parameter with the file it came from (config/showconfig.ts);
 *   without FQRN, each repository configured in `<root>/config.d`.
 * - probe [FQRN...]: lists `<cvmfs root>/<fqrn>` and checks that a cvmfs2 FUSE file system is mounted
 *   there: `Probing /cvmfs/<fqrn>... OK` or `Failed!`; without FQRN, every cvmfs2 mount under the root.
 * - stat [-v] [FQRN]: cvmfs_config's one-line table (or labelled lines) from the mount's magic xattrs;
 *   memory and file descriptors of the daemon from /proc/<pid>; cache use from statfs of the mount
 *   (as `df`); ONLINE = the current host serves .cvmfspublished through the current proxy.
 * - chksetup [FQRN...]: FUSE device, fusermount, readable configuration, mount root, and per
 *   repository (given, or configured in config.d): a usable configuration with loadable public keys
 *   and a writable cache directory. Prints the problems, or `OK`.
 *
 * These run in their own process, so touching the mountpoints is fine (a daemon must never touch its
 * own). A failed probe, an unmounted repository for stat and any chksetup error exit with status 1.
 */
import type { Command } from '@commander-js/extra-typings';
import { constants } from 'node:fs';
import { access, readdir, readFile, stat, statfs } from 'node:fs/promises';
import { delimiter, dirname, join, resolve } from 'node:path';
import { DEFAULT_CONFIG_ROOT, loadConfig } from '../config/bash-config';
import { parseSettings } from '../config/parameters';
import { formatShowConfig } from '../config/showconfig';
import { loadPublicKeys } from '../publish/keys';
import { Downloader } from '../net/downloader';
import { describeError } from '../errors';
import { cvmfsMountpoints, magicXattr, mountedInstances } from './instances';

export interface ConfigCommandOptions {
  configRoot?: string;
  cvmfsRoot?: string;
}

type Out = (text: string) => void;
const stdout: Out = (t) => process.stdout.write(t);
const DEFAULT_CVMFS_ROOT = '/cvmfs';

function configRootOf(o: ConfigCommandOptions): string {
  return resolve(o.configRoot ?? process.env.CVMFS_TS_CONFIG_ROOT ?? DEFAULT_CONFIG_ROOT);
}

/** Repositories with a file of their own in `<root>/config.d` (`<fqrn>.conf` / `<fqrn>.local`). */
async function configuredRepositories(root: string): Promise<string[]> {
  const names = await readdir(join(root, 'config.d')).catch(() => [] as string[]);
  const fqrns = names.map((n) => /^(.+)\.(?:conf|local)$/.exec(n)?.[1]).filter((n) => n !== undefined);
  return [...new Set(fqrns)].sort();
}

export async function runShowConfig(fqrn: string | undefined, o: ConfigCommandOptions & { short?: boolean }, out: Out = stdout): Promise<void> {
  const root = configRootOf(o);
  const show = async (name: string) => {
    const config = await loadConfig(name, { root });
    out(formatShowConfig(config, parseSettings(config), { short: o.short }));
  };
  if (fqrn) return show(fqrn);
  for (const name of await configuredRepositories(root)) {
    out(`\nRunning cvmfs-ts config showconfig ${o.short ? '-s ' : ''}${name}:\n`);
    await show(name);
  }
}

export async function runProbe(fqrns: readonly string[], o: ConfigCommandOptions, out: Out = stdout): Promise<void> {
  const root = resolve(o.cvmfsRoot ?? DEFAULT_CVMFS_ROOT);
  const mounted = await cvmfsMountpoints();
  const targets = fqrns.length > 0 ? fqrns.map((f) => join(root, f)) : mounted.filter((m) => dirname(m) === root);
  for (const mountpoint of targets) {
    out(`Probing ${mountpoint}... `);
    const listed = await readdir(mountpoint).then(
      () => true,
      () => false,
    );
    const ok = listed && (await cvmfsMountpoints()).includes(mountpoint);
    out(ok ? 'OK\n' : 'Failed!\n');
    if (!ok) process.exitCode = 1;
  }
}

// ---- stat ----

/** The figures of one mount, as cvmfs_config stat gathers them. */
interface MountFigures {
  version: string;
  pid: string;
  uptime: string;
  memoryK: string;
  revision: string;
  rootHash: string;
  expires: string;
  catalogs: string;
  cacheUseK: number;
  cacheMaxK: number;
  usedFd: string;
  maxFd: string;
  ioErrors: string;
  host: string;
  proxy: string;
  online: boolean;
  opens: string;
  dirOpens: string;
  hitrate: string;
  rxK: string;
  speed: string;
}

/** One field of /proc/<pid>/<file> ('?' when it cannot be read). */
async function procField(pid: string, file: string, pattern: RegExp): Promise<string> {
  const text = await readFile(`/proc/${pid}/${file}`, 'utf8').catch(() => '');
  return pattern.exec(text)?.[1] ?? '?';
}

/** Whether `host` serves .cvmfspublished through `proxy` within the mount's timeouts (cvmfs_config: curl). */
async function isOnline(host: string, proxy: string, timeoutS: number, timeoutDirectS: number): Promise<boolean> {
  if (!host) return false;
  const downloader = new Downloader({
    serverUrls: [host],
    proxyGroups: [[proxy || 'DIRECT']],
    timeoutS: timeoutS || 5,
    timeoutDirectS: timeoutDirectS || 10,
    maxRetries: 0,
    backoffInitS: 0,
    backoffMaxS: 0,
    lowSpeedLimit: 0,
    followRedirects: false,
    proxyResetAfterS: 0,
    hostResetAfterS: 0,
  });
  try {
    await downloader.fetch('.cvmfspublished', () => undefined);
    return true;
  } catch {
    return false;
  } finally {
    await downloader.close();
  }
}

async function gatherFigures(mountpoint: string): Promise<MountFigures> {
  const x = async (name: string) => (await magicXattr(mountpoint, name)) ?? '?';
  const [version, pid, uptime, revision, rootHash, expires, catalogs, ioErrors, host, proxy, timeout, timeoutDirect] = await Promise.all(
    ['version', 'pid', 'uptime', 'revision', 'root_hash', 'expires', 'nclg', 'nioerr', 'host', 'proxy', 'timeout', 'timeout_direct'].map(x),
  );
  const [opens, dirOpens, hitrate, rxK, speed] = await Promise.all(['nopen', 'ndiropen', 'hitrate', 'rx', 'speed'].map(x));
  // df of the mount: the daemon reports its cache quota as the file system's size (§5.4).
  const fs = await statfs(mountpoint).catch(() => undefined);
  const cacheUseK = fs ? Math.floor(((fs.blocks - fs.bfree) * fs.bsize) / 1024) : 0;
  const cacheMaxK = fs ? cacheUseK + Math.floor((fs.bavail * fs.bsize) / 1024) : 0;
  // File descriptors: the daemon's open ones against its soft limit (cvmfs: handed to clients vs. usable).
  const usedFd = await readdir(`/proc/${pid}/fd`).then(
    (fds) => String(fds.length),
    () => '?',
  );
  return {
    version,
    pid,
    uptime,
    memoryK: await procField(pid, 'status', /^VmRSS:\s*(\d+) kB/m),
    revision,
    rootHash,
    expires,
    catalogs,
    cacheUseK,
    cacheMaxK,
    usedFd,
    maxFd: await procField(pid, 'limits', /^Max open files\s+(\d+)/m),
    ioErrors,
    host,
    proxy,
    online: await isOnline(host, proxy, Number(timeout), Number(timeoutDirect)),
    opens,
    dirOpens,
    hitrate,
    rxK,
    speed,
  };
}

export const STAT_HEADER =
  'VERSION PID UPTIME(M) MEM(K) REVISION EXPIRES(M) NOCATALOGS CACHEUSE(K) CACHEMAX(K) NOFDUSE NOFDMAX NOIOERR NOOPEN HITRATE(%) RX(K) SPEED(K/S) HOST PROXY ONLINE';

function formatFigures(f: MountFigures, verbose: boolean): string {
  if (!verbose) {
    const row = [f.version, f.pid, f.uptime, f.memoryK, f.revision, f.expires, f.catalogs, f.cacheUseK, f.cacheMaxK, f.usedFd, f.maxFd];
    row.push(f.ioErrors, f.opens, f.hitrate, f.rxK, f.speed, f.host, f.proxy, f.online ? 1 : 0);
    return `${STAT_HEADER}\n${row.join(' ')}\n`;
  }
  return [
    `Version: ${f.version}`,
    `PID: ${f.pid}`,
    `Uptime: ${f.uptime} minutes`,
    `Memory Usage: ${f.memoryK}k`,
    `File Catalog Revision: ${f.revision} (expires in ${f.expires} minutes)`,
    `File Catalog ID: ${f.rootHash}`,
    `No. Active File Catalogs: ${f.catalogs}`,
    `Cache Usage: ${f.cacheUseK}k / ${f.cacheMaxK}k`,
    `File Descriptor Usage: ${f.usedFd} / ${f.maxFd}`,
    `No. IO Errors: ${f.ioErrors}`,
    `Connection: ${f.host} through proxy ${f.proxy} (${f.online ? 'online' : 'offline'})`,
    `Usage: ${f.opens} open() calls (hitrate ${f.hitrate}%), ${f.dirOpens} opendir() calls`,
    `Transfer Statistics: ${f.rxK}k read, avg. speed: ${f.speed}k/s`,
    '',
  ].join('\n');
}

export async function runStat(fqrn: string | undefined, o: { verbose?: boolean }, out: Out = stdout): Promise<void> {
  const instances = await mountedInstances();
  if (fqrn === undefined) {
    for (const i of instances) {
      out(`\nRunning cvmfs-ts config stat ${o.verbose ? '-v ' : ''}${i.fqrn}:\n`);
      out(formatFigures(await gatherFigures(i.mountpoint), o.verbose ?? false));
    }
    return;
  }
  const mount = instances.find((i) => i.fqrn === fqrn);
  if (!mount) {
    out(`${fqrn} not mounted\n`);
    process.exitCode = 1;
    return;
  }
  out(formatFigures(await gatherFigures(mount.mountpoint), o.verbose ?? false));
}

// ---- chksetup ----

async function can(path: string, mode: number): Promise<boolean> {
  return access(path, mode).then(
    () => true,
    () => false,
  );
}

/** The nearest existing directory at or above `path`. */
async function existingAncestor(path: string): Promise<string> {
  for (let p = resolve(path); ; p = dirname(p)) {
    if ((await stat(p).catch(() => undefined))?.isDirectory() || p === dirname(p)) return p;
  }
}

/** Every configuration file under `root` the client would source, for any repository. */
async function configFiles(root: string): Promise<string[]> {
  const files = ['default.conf', 'default.local'].map((f) => join(root, f));
  for (const [dir, pattern] of [
    ['default.d', /\.conf$/],
    ['domain.d', /\.(conf|local)$/],
    ['config.d', /\.(conf|local)$/],
  ] as const) {
    const names = await readdir(join(root, dir)).catch(() => [] as string[]);
    files.push(...names.filter((n) => pattern.test(n)).map((n) => join(root, dir, n)));
  }
  const present = await Promise.all(files.map(async (f) => ((await stat(f).catch(() => undefined))?.isFile() ? f : undefined)));
  return present.filter((f) => f !== undefined);
}

/** The problems found, one sentence each, `Error: …` or `Warning: …`. */
export async function checkSetup(fqrns: readonly string[], o: ConfigCommandOptions): Promise<string[]> {
  const problems: string[] = [];
  const error = (m: string) => problems.push(`Error: ${m}`);

  const fuse = await stat('/dev/fuse').catch(() => undefined);
  if (!fuse) error('/dev/fuse is missing (modprobe fuse)');
  else if (!fuse.isCharacterDevice()) error('/dev/fuse is not a character device');
  else if (!(await can('/dev/fuse', constants.R_OK | constants.W_OK))) error('/dev/fuse is not readable and writable by this user');

  const path = (process.env.PATH ?? '').split(delimiter).filter((d) => d !== '');
  const helpers = path.flatMap((d) => ['fusermount3', 'fusermount'].map((n) => join(d, n)));
  if (!(await Promise.all(helpers.map((h) => can(h, constants.X_OK)))).some(Boolean)) error('fusermount (fuse3 or fuse) is not in PATH');

  const root = configRootOf(o);
  if (!(await stat(root).catch(() => undefined))?.isDirectory() || !(await can(root, constants.R_OK | constants.X_OK))) {
    error(`configuration root ${root} is not a readable directory`);
  }
  for (const file of await configFiles(root)) if (!(await can(file, constants.R_OK))) error(`${file} is not readable`);

  const cvmfsRoot = resolve(o.cvmfsRoot ?? DEFAULT_CVMFS_ROOT);
  if (!(await stat(cvmfsRoot).catch(() => undefined))?.isDirectory()) error(`mount root ${cvmfsRoot} is not a directory`);

  for (const fqrn of fqrns.length > 0 ? fqrns : await configuredRepositories(root)) {
    let cacheDir: string;
    try {
      const settings = parseSettings(await loadConfig(fqrn, { root }));
      await loadPublicKeys(settings.publicKeyFiles);
      cacheDir = settings.cacheDir;
    } catch (e) {
      error(`${fqrn}: ${describeError(e)}`);
      continue;
    }
    // The cache directory, or where the first mount will create it, must be writable.
    const dir = await existingAncestor(cacheDir);
    if (!(await can(dir, constants.W_OK | constants.X_OK))) error(`${fqrn}: cache directory ${cacheDir} is not writable (${dir})`);
  }
  return problems;
}

export async function runCheckSetup(fqrns: readonly string[], o: ConfigCommandOptions, out: Out = stdout): Promise<void> {
  const problems = await checkSetup(fqrns, o);
  out(problems.length > 0 ? problems.map((p) => p + '\n').join('') : 'OK\n');
  if (problems.some((p) => p.startsWith('Error:'))) process.exitCode = 1;
}

export function registerConfigCommand(program: Command): void {
  const config = program.command('config').description('show and check the client setup and running mounts (as cvmfs_config)');
  const CONFIG_ROOT = ['--config-root <dir>', 'configuration root instead of /etc/cvmfs (or $CVMFS_TS_CONFIG_ROOT)'] as const;
  const CVMFS_ROOT = ['--cvmfs-root <dir>', 'where repositories are mounted', DEFAULT_CVMFS_ROOT] as const;
  config
    .command('showconfig')
    .description('every parameter of a repository with the file that set it')
    .argument('[fqrn]', 'repository (default: each one configured in config.d)')
    .option('-s, --short', 'only parameters that are set')
    .option(...CONFIG_ROOT)
    .action((fqrn, o) => runShowConfig(fqrn, o));
  config
    .command('probe')
    .description('list the root of mounted repositories: Probing <dir>... OK | Failed!')
    .argument('[fqrn...]', 'repositories (default: every cvmfs2 mount under the mount root)')
    .option(...CVMFS_ROOT)
    .action((fqrns, o) => runProbe(fqrns, o));
  config
    .command('stat')
    .description('state of mounted repositories, as cvmfs_config stat')
    .argument('[fqrn]', 'repository (default: every mounted one)')
    .option('-v, --verbose', 'one labelled value per line')
    .action((fqrn, o) => runStat(fqrn, o));
  config
    .command('chksetup')
    .description('check FUSE, fusermount, configuration, keys, cache directories and mount root')
    .argument('[fqrn...]', 'repositories to check (default: each one configured in config.d)')
    .option(...CONFIG_ROOT)
    .option(...CVMFS_ROOT)
    .action((fqrns, o) => runCheckSetup(fqrns, o));
}
