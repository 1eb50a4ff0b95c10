/**
 * sd_notify(3) for the daemons that systemd starts with Type=notify (systemd/cvmfs-ts@.service,
 * systemd/cvmfs-ts-snapshotter.service): READY=1 once the mount or the socket is usable,
 * STOPPING=1 when shutting down, STATUS= lines for `systemctl status`.
 *
 * The protocol is one datagram on the unix socket named by $NOTIFY_SOCKET. Node has no unix
 * datagram sockets, and the npm packages that add them are native addons (one more compiled
 * dependency to build on every machine). So the datagram is sent by systemd-notify(1), which is
 * installed wherever systemd is. It is not the race the man page warns about for helpers: when
 * run by root, systemd-notify sends with its parent's pid in SCM_CREDENTIALS — ours, the unit's main
 * pid — so systemd attributes the message to the main process even after the helper exited; when
 * it cannot (not root), it falls back to its own pid and, without --no-block, waits until systemd
 * has processed the message (a barrier), so NotifyAccess=all still attributes it while the helper
 * lives. The units set NotifyAccess=all to cover both.
 */
import { spawn } from 'node:child_process';
import { CvmfsError } from '../errors';

/** systemd-notify waits for systemd to process the message; never let a wedged manager hold us. */
const NOTIFY_TIMEOUT_MS = 10_000;

export type NotifyFields = Readonly<Record<string, string>>;

export class SystemdNotifier {
  private constructor(
    readonly socket: string,
    private readonly command: string,
  ) {}

  /**
   * The notifier for this process when systemd started it with a notification socket, else
   * undefined. Takes NOTIFY_SOCKET out of `env` (sd_notify's unset_environment): processes we start
   * — the repository mounts the snapshotter starts — are not the service and must not speak for it
   * (their STOPPING=1 would read as ours under NotifyAccess=all).
   */
  static fromEnvironment(env: NodeJS.ProcessEnv = process.env, command = 'systemd-notify'): SystemdNotifier | undefined {
    const socket = env.NOTIFY_SOCKET;
    delete env.NOTIFY_SOCKET;
    return socket ? new SystemdNotifier(socket, command) : undefined;
  }

  /** Sends `fields` as one message; resolves once systemd-notify reports it delivered. */
  notify(fields: NotifyFields): Promise<void> {
    // One KEY=VALUE per line is the protocol: a newline inside a value would start a new field.
    const args = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\s*\n\s*/g, ' ')}`);
    return new Promise((done, fail) => {
      const child = spawn(this.command, args, {
        env: { ...process.env, NOTIFY_SOCKET: this.socket },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), NOTIFY_TIMEOUT_MS);
      child.on('error', (e) => {
        clearTimeout(timer);
        fail(new CvmfsError('E_UNAVAILABLE', `cannot run ${this.command} to notify systemd: ${e.message}`, { cause: e }));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) done();
        else fail(new CvmfsError('E_UNAVAILABLE', `${this.command} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim() || 'no message'}`));
      });
    });
  }

  ready(status: string): Promise<void> {
    return this.notify({ READY: '1', STATUS: status });
  }

  stopping(status: string): Promise<void> {
    return this.notify({ STOPPING: '1', STATUS: status });
  }

  status(status: string): Promise<void> {
    return this.notify({ STATUS: status });
  }
}
