/**
 * `mount.cvmfs-ts`, the helper mount(8) runs for file systems of type cvmfs-ts: it makes
 * `mount -t cvmfs-ts FQRN /cvmfs/FQRN`, /etc/fstab lines (`FQRN /cvmfs/FQRN cvmfs-ts
 * defaults,_netdev,nodev 0 0`), the systemd mount/automount units made from them and autofs
 * (autofs/auto.cvmfs-ts) mount through the same code as `cvmfs-ts mount`.
 *
 * mount(8) calls `/sbin/mount.cvmfs-ts SPEC DIR [-sfnv] [-N NS] [-o OPTIONS]` and reads the exit
 * status with its own meanings (1: bad invocation, 32: mount failure). The options are fstab's:
 * generic ones that need nothing from us are dropped, `CVMFS_*=value` become configuration
 * overrides (as `cvmfs-ts mount -o`), `config_root=DIR` and `log=FILE` stand for the command's
 * --config-root and --log; without config_root, $CVMFS_TS_CONFIG_ROOT or /etc/cvmfs is read.
 */
import { basename, dirname, resolve } from 'node:path';
import { formatMountOptions, splitMountOptions } from '../config/bash-config';
import { mountInBackground } from './mount-command';
import { mountTable } from '../system/mounts';
import { CvmfsError, describeError } from '../errors';

/** This program's CLI, which the mount daemon runs as. */
const BIN = resolve(__dirname, '../../bin/cvmfs-ts');

/** mount(8)'s exit statuses for helpers. */
const EXIT_USAGE = 1;
const EXIT_MOUNT_FAILURE = 32;

/** The file system type in mountinfo: FUSE with our subtype (src/fuse/adapter.ts). */
const MOUNTED_TYPE = 'fuse.cvmfs-ts';

/**
 * Options that need nothing from us: mount(8)'s own (who may mount it and when, which it has
 * handled before calling us), what every cvmfs-ts mount is anyway (ro, nodev, nosuid; exec and
 * dev/suid are not granted beyond that), or what cannot matter for a read-only file system
 * (access times, sync). `rw` is here because fstab's `defaults` means it: the mount is read-only
 * regardless, as with cvmfs.
 */
const GENERIC = new Set([
  'defaults', '_netdev', '_rnetdev', 'nofail', 'auto', 'noauto', 'user', 'users', 'nouser', 'owner', 'group',
  'ro', 'rw', 'nodev', 'dev', 'nosuid', 'suid', 'exec',
  'async', 'sync', 'dirsync', 'atime', 'noatime', 'relatime', 'norelatime', 'strictatime', 'nostrictatime',
  'lazytime', 'nolazytime', 'diratime', 'nodiratime', 'silent', 'loud',
]);
/** Userspace-only options of mount(8) and systemd (x-systemd.automount, comment=…). */
const GENERIC_PREFIXES = ['x-', 'comment='];

const FQRN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface HelperRequest {
  fqrn: string;
  mountpoint: string;
  /** CVMFS_* configuration overrides. */
  parameters: Record<string, string>;
  configRoot?: string;
  log?: string;
  /** `-o remount`: the options of a mounted repository cannot change; succeeds if it is mounted. */
  remount: boolean;
  /** -f: everything but the mount itself. */
  fake: boolean;
  verbose: boolean;
  /** Options that -s (sloppy) let us ignore. */
  ignored: string[];
}

/** mount(8)'s helper arguments; E_USAGE for anything it would call an incorrect invocation. */
export function parseHelperArgs(argv: readonly string[]): HelperRequest {
  const positional: string[] = [];
  const optionTexts: string[] = [];
  let sloppy = false;
  let fake = false;
  let verbose = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    // Letters may be grouped (-sfv); -o, -t and -N take the rest of the word or the next one.
    for (let j = 1; j < arg.length; j++) {
      const letter = arg[j]!;
      if ('otN'.includes(letter)) {
        const value = j + 1 < arg.length ? arg.slice(j + 1) : argv[++i];
        if (value === undefined) throw new CvmfsError('E_USAGE', `option -${letter} needs a value`);
        if (letter === 'o') optionTexts.push(value);
        // -N: mount(8) asks us to mount in another mount namespace; Node cannot setns(2).
        if (letter === 'N') throw new CvmfsError('E_USAGE', 'mounting in another mount namespace (-N) is not supported; run mount(8) inside it');
        // -t TYPE.SUBTYPE only repeats what mount(8) already chose us for.
        break;
      }
      if (letter === 's') sloppy = true;
      else if (letter === 'f') fake = true;
      else if (letter === 'v') verbose = true;
      else if (letter !== 'n') throw new CvmfsError('E_USAGE', `unknown option -${letter}`); // -n: no mtab to write (it is /proc's)
    }
  }
  if (positional.length !== 2) {
    throw new CvmfsError('E_USAGE', 'usage: mount.cvmfs-ts FQRN MOUNTPOINT [-sfnv] [-o OPTIONS]');
  }
  // Some mount(8) versions turn a spec naming an existing file into its absolute path (cvmfs's
  // helper does the same): the repository name is the last component.
  const fqrn = positional[0]!.startsWith('/') ? basename(positional[0]!) : positional[0]!;
  if (!FQRN.test(fqrn) || fqrn.endsWith('.')) {
    throw new CvmfsError('E_USAGE', `'${positional[0]}' is not a repository name (letters, digits, '.', '-', '_')`);
  }
  const request: HelperRequest = {
    fqrn,
    mountpoint: resolve(positional[1]!),
    parameters: {},
    remount: false,
    fake,
    verbose,
    ignored: [],
  };
  for (const item of optionTexts.flatMap(splitMountOptions)) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    if (item === '' || GENERIC.has(item) || GENERIC_PREFIXES.some((p) => item.startsWith(p))) continue;
    if (item === 'remount') request.remount = true;
    else if (/^CVMFS_[A-Za-z0-9_]+$/.test(name) && value !== undefined) request.parameters[name] = value;
    else if (name === 'config_root' && value) request.configRoot = resolve(value);
    else if (name === 'log' && value) request.log = resolve(value);
    else if (sloppy) request.ignored.push(item);
    else throw new CvmfsError('E_USAGE', `unsupported mount option '${item}' (generic options, CVMFS_<PARAMETER>=value, config_root=DIR and log=FILE are accepted)`);
  }
  return request;
}

/**
 * Whether automount(8) manages `mountpoint` (an indirect map's directory above it, or a direct
 * map's trigger on it). While it mounts there, the kernel lets only automount's process group
 * through that path and holds every other access until the mount is done: a daemon detached into
 * its own session would wait on its own mount point forever. Under autofs the daemon therefore
 * stays in the process group automount started us in (Node cannot setsid(2) after mounting, as
 * cvmfs2 does). It leaves as every daemon does: automount unmounts on expiry and at shutdown.
 */
async function underAutofs(mountpoint: string): Promise<boolean> {
  const parent = dirname(mountpoint);
  return (await mountTable()).some((m) => m.fsType === 'autofs' && (m.mountpoint === parent || m.mountpoint === mountpoint));
}

/** The equivalent `cvmfs-ts mount` command line, for -v. */
export function describeRequest(r: HelperRequest): string {
  const args = ['cvmfs-ts', 'mount', r.fqrn, r.mountpoint];
  if (Object.keys(r.parameters).length > 0) args.push('-o', formatMountOptions(r.parameters));
  if (r.configRoot) args.push('--config-root', r.configRoot);
  if (r.log) args.push('--log', r.log);
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

async function run(argv: readonly string[]): Promise<number> {
  let request: HelperRequest;
  try {
    request = parseHelperArgs(argv);
  } catch (e) {
    process.stderr.write(`mount.cvmfs-ts: ${describeError(e)}\n`);
    return EXIT_USAGE;
  }
  if (request.ignored.length > 0) process.stderr.write(`mount.cvmfs-ts: ignoring unsupported options ${request.ignored.join(',')}\n`);
  if (request.verbose) process.stdout.write(`mount.cvmfs-ts: ${describeRequest(request)}\n`);
  if (request.fake) return 0;
  try {
    if (request.remount) {
      const mounted = (await mountTable()).some((m) => m.mountpoint === request.mountpoint && m.fsType === MOUNTED_TYPE);
      if (mounted) return 0;
      throw new CvmfsError('E_NOT_FOUND', `${request.fqrn} is not mounted on ${request.mountpoint}, nothing to remount`);
    }
    const options = Object.keys(request.parameters).length > 0 ? formatMountOptions(request.parameters) : undefined;
    const detach = !(await underAutofs(request.mountpoint));
    await mountInBackground(request.fqrn, request.mountpoint, { options, configRoot: request.configRoot, log: request.log, detach }, BIN);
    return 0;
  } catch (e) {
    process.stderr.write(`mount.cvmfs-ts: ${describeError(e)}\n`);
    return EXIT_MOUNT_FAILURE;
  }
}

export async function main(argv: readonly string[]): Promise<void> {
  process.exitCode = await run(argv);
}

// bin/mount.cvmfs-ts runs this file.
if (require.main === module) void main(process.argv.slice(2));
