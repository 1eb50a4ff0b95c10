/**
 * A stand-in for systemd's notification socket ($NOTIFY_SOCKET), for tests of Type=notify daemons
 * on a machine where systemd is not PID 1: a unix datagram socket (python3 — Node has none) that
 * reports every message with the sender's pid from SCM_CREDENTIALS, which is how systemd decides
 * which unit and process a message comes from. Like systemd, it closes the fds of BARRIER=1
 * messages, which is what systemd-notify waits for.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Test } from 'tap';

const RECEIVER = `
import array, json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
print(json.dumps({"listening": True}), flush=True)
while True:
    data, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4 * 16))
    pid, fds = None, []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    for fd in fds:
        os.close(fd)
    print(json.dumps({"pid": pid, "text": data.decode("utf-8", "replace")}), flush=True)
`;

export interface NotifyMessage {
  /** The sender as systemd sees it (SCM_CREDENTIALS). */
  pid: number;
  fields: Record<string, string>;
}

export interface NotifySocket {
  path: string;
  /** Messages so far, BARRIER=1 ones left out. */
  messages(): NotifyMessage[];
  /** The first message (from now on or already received) that `match` accepts. */
  waitFor(match: (m: NotifyMessage) => boolean, timeoutMs?: number): Promise<NotifyMessage>;
}

export async function startNotifySocket(t: Test, dir: string): Promise<NotifySocket> {
  const path = join(dir, 'notify.sock');
  const child = spawn('python3', ['-c', RECEIVER, path], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const messages: NotifyMessage[] = [];
  const waiters = new Set<() => void>();
  let buffered = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  await new Promise<void>((listening, fail) => {
    child.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const m = JSON.parse(line) as { listening?: boolean; pid?: number; text?: string };
        if (m.listening) listening();
        else {
          const fields = Object.fromEntries(
            (m.text ?? '').split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
          );
          if (fields.BARRIER !== '1') messages.push({ pid: m.pid ?? 0, fields });
        }
      }
      for (const w of waiters) w();
    });
    void exited.then(() => fail(new Error(`notify socket receiver exited: ${stderr}`)));
  });
  return {
    path,
    messages: () => [...messages],
    waitFor(match, timeoutMs = 60_000) {
      return new Promise((done, fail) => {
        const check = () => {
          const m = messages.find(match);
          if (!m) return;
          clearTimeout(timer);
          waiters.delete(check);
          done(m);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          fail(new Error(`no matching notification within ${timeoutMs} ms; got ${JSON.stringify(messages)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}
