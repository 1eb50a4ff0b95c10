/**
 * `cvmfs-ts mount FQRN MOUNTPOINT`: like mount(8), returns once the file system is ready. The
 * serving daemon is this program again with --foreground, detached, logging to a file; it tells
 * the parent through an inherited pipe (fd 3) whether the mount succeeded, then keeps serving until
 * the mountpoint is unmounted (umount / fusermount -u) or it receives SIGTERM/SIGINT.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync, createWriteStream } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Mount } from '../client/mount';
import { isMountpoint } from '../system/mounts';
import { createLogger } from '../client/log';
import { parseMountOptions } from '../config/bash-config';
import { CvmfsError, describeError } from '../errors';
import { SystemdNotifier } from '../system/sd-notify';

export interface MountCommandOptions {
  options?: string; // -o PARAM=value,...
  foreground?: boolean;
  configRoot?: string;
  log?: string;
  readyFd?: number;
  /** Start the daemon in its own session (default); mount.cvmfs-ts keeps it in autofs's process group. */
  detach?: boolean;
}

const READY_FD = 3;
const UNMOUNT_POLL_MS = 500;

export function defaultLogFile(fqrn: string): string {
  return `/var/log/cvmfs-ts/${fqrn}.log`;
}

/** Runs the mount in this process until it is unmounted. */
export async function serveMount(fqrn: string, mountpoint: string, o: MountCommandOptions): Promise<void> {
  const log = createLogger(fqrn);
  // Started by systemd with Type=notify (systemd/cvmfs-ts@.service): it waits for READY=1.
  const systemd = SystemdNotifier.fromEnvironment();
  const tellSystemd = (sent: Promise<void> | undefined) => void sent?.catch((e) => log.warn(`systemd notification: ${describeError(e)}`));
  const ready = (message: object) => {
    if (o.readyFd === undefined) return;
    const stream = createWriteStream('', { fd: o.readyFd });
    stream.end(JSON.stringify(message) + '\n');
  };
  let mount: Mount;
  try {
    mount = await Mount.create({
      fqrn,
      mountpoint: resolve(mountpoint),
      configRoot: o.configRoot ?? process.env.CVMFS_TS_CONFIG_ROOT,
      overrides: o.options ? parseMountOptions(o.options) : undefined,
      log,
    });
  } catch (e) {
    log.error(`mount failed: ${describeError(e)}`);
    ready({ ok: false, error: describeError(e) });
    throw e;
  }
  ready({ ok: true });
  tellSystemd(systemd?.ready(`serving ${fqrn} on ${resolve(mountpoint)}`));
  await new Promise<void>((done) => {
    let stopping = false;
    const stop = async (why: string) => {
      if (stopping) return;
      stopping = true;
      clearInterval(poll);
      log.info(`unmounting (${why})`);
      tellSystemd(systemd?.stopping(`unmounting (${why})`));
      await mount.unmount().catch((e) => log.warn(`unmount: ${describeError(e)}`));
      done();
    };
    // There is no FUSE destroy callback in fuse-native: notice an external umount by polling.
    const poll = setInterval(() => {
      void isMountpoint(resolve(mountpoint)).then((m) => (m ? undefined : stop('mountpoint was unmounted')));
    }, UNMOUNT_POLL_MS);
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
  });
}

/** Starts the daemon detached and waits for its verdict. */
export async function mountInBackground(fqrn: string, mountpoint: string, o: MountCommandOptions, bin: string): Promise<void> {
  const logFile = resolve(o.log ?? defaultLogFile(fqrn));
  mkdirSync(dirname(logFile), { recursive: true });
  const logFd = openSync(logFile, 'a');
  const args = [bin, 'mount', fqrn, mountpoint, '--foreground', '--ready-fd', String(READY_FD), '--log', logFile];
  if (o.options) args.push('-o', o.options);
  if (o.configRoot) args.push('--config-root', o.configRoot);
  const child = spawn(process.execPath, args, { detached: o.detach ?? true, stdio: ['ignore', logFd, logFd, 'pipe'] });
  closeSync(logFd);
  const verdict = await new Promise<{ ok: boolean; error?: string }>((done) => {
    let text = '';
    const pipe = child.stdio[READY_FD] as NodeJS.ReadableStream;
    pipe.on('data', (d: Buffer) => (text += d.toString()));
    pipe.on('end', () => {
      try {
        done(JSON.parse(text) as { ok: boolean; error?: string });
      } catch {
        done({ ok: false, error: `the mount daemon exited before the file system was ready; see ${logFile}` });
      }
    });
  });
  if (!verdict.ok) {
    await new Promise((done) => (child.exitCode !== null ? done(null) : child.once('exit', done)));
    throw new CvmfsError('E_USAGE', verdict.error ?? 'mount failed');
  }
  child.unref();
  (child.stdio[READY_FD] as NodeJS.ReadableStream & { destroy(): void }).destroy();
}
