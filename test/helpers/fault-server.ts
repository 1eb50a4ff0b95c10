/**
 * A misbehaving repository server in its own process (tests that read a mount must not serve from their
 * own event loop, see serve.ts). It serves the files of a repository directory like `cvmfs-ts serve`,
 * except that requests it is told to spoil get a fault:
 *
 *   ok      serve the file
 *   500     HTTP 500
 *   reset   headers and half of the body, then the connection is destroyed
 *   stall   headers and half of the body, then nothing (the low-speed rule must end it)
 *   mute    nothing at all, not even headers (the timeout must end it)
 *   flip    the whole file with one byte changed
 *
 * Which requests: `data` = file contents only (data/XX/... objects without a suffix, or chunks: the
 * manifest, certificate and catalogs stay good, so a mount through this server works and only reading
 * files meets the fault), or `all`.
 * The mode can be changed while it runs (`setMode`). Each request is reported as one line.
 *
 * The child runs `serve(ROOT, MODE, SCOPE)` and takes `MODE SCOPE` lines on stdin.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join, normalize } from 'node:path';
import type { Test } from 'tap';

export type FaultMode = 'ok' | '500' | 'reset' | 'stall' | 'mute' | 'flip';
export type FaultScope = 'data' | 'all';

export interface FaultRequest {
  readonly path: string;
  /** The mode applied to it ('ok' when it was served normally). */
  readonly fault: FaultMode;
  readonly pragma: string;
}

export interface FaultServer {
  readonly url: string;
  readonly pid: number;
  /** Requests so far. */
  requests(): FaultRequest[];
  setMode(mode: FaultMode, scope?: FaultScope): Promise<void>;
  /** Ends the process; later connections are refused. */
  stop(): Promise<void>;
}

/** Whole files and chunks (no suffix, or P); not catalogs (C), certificates (X) or anything else. */
const isFileObject = (path: string): boolean => /^\/data\/[0-9a-f]{2}\/[0-9a-f]+P?$/.test(path);

/** Starts a fault server process serving `root`; stopped at teardown. */
export async function startFaultServer(t: Test, root: string, mode: FaultMode, scope: FaultScope = 'data'): Promise<FaultServer> {
  // A CommonJS entry that loads this file through ts-node (a .ts main script would go through the test
  // runner's ESM hooks, which the child inherits and which do not know .ts).
  const main = `require('ts-node/register/transpile-only'); require(${JSON.stringify(__filename)}).serve(...process.argv.slice(1));`;
  const child = spawn(process.execPath, ['-e', main, root, mode, scope], {
    stdio: ['pipe', 'pipe', 'inherit'],
    cwd: join(__dirname, '..', '..'),
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  t.teardown(stop);
  const seen: FaultRequest[] = [];
  const acks: (() => void)[] = [];
  let buffered = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const [kind, ...rest] = line.split(' ');
        if (kind === 'listening') resolve(rest[0]);
        else if (kind === 'request') seen.push({ fault: rest[0] as FaultMode, pragma: rest[1] === '-' ? '' : rest[1], path: rest[2] });
        else if (kind === 'mode') acks.shift()?.();
      }
    });
    child.once('close', (code) => reject(new Error(`fault server exited with ${code}`)));
  });
  return {
    url,
    pid: child.pid ?? 0,
    requests: () => [...seen],
    setMode: (m, s = scope) =>
      new Promise<void>((resolve) => {
        acks.push(resolve);
        child.stdin!.write(`${m} ${s}\n`);
      }),
    stop,
  };
}

/** The server itself, in the child process. */
export function serve(root: string, initialMode: FaultMode, initialScope: FaultScope): void {
  let mode = initialMode;
  let scope = initialScope;
  const server = http.createServer((req, res) => {
    void (async () => {
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      const fault: FaultMode = scope === 'all' || isFileObject(path) ? mode : 'ok';
      process.stdout.write(`request ${fault} ${req.headers.pragma || '-'} ${path}\n`);
      if (fault === 'mute') return;
      if (fault === '500') return void res.writeHead(500, { 'content-length': '0' }).end();
      const file = join(root, normalize(path));
      const st = await stat(file).catch(() => undefined);
      if (!st?.isFile()) return void res.writeHead(404, { 'content-length': '0' }).end();
      const headers = { 'content-length': st.size, 'content-type': 'application/octet-stream', 'cache-control': 'max-age=60' };
      if (fault === 'ok') {
        res.writeHead(200, headers);
        createReadStream(file).pipe(res);
        return;
      }
      const body = await readFile(file);
      if (fault === 'flip') {
        body[body.length >> 1] ^= 0x20;
        return void res.writeHead(200, headers).end(body);
      }
      res.writeHead(200, headers);
      res.write(body.subarray(0, body.length >> 1), () => {
        if (fault === 'reset') setTimeout(() => res.socket?.destroy(), 10);
        // stall: keep the connection open and silent
      });
    })().catch(() => res.destroy());
  });
  let input = '';
  process.stdin.on('data', (d: Buffer) => {
    input += d.toString();
    const lines = input.split('\n');
    input = lines.pop()!;
    for (const line of lines) {
      const [m, s] = line.trim().split(' ');
      mode = m as FaultMode;
      scope = (s as FaultScope) ?? scope;
      process.stdout.write(`mode ${mode} ${scope}\n`);
    }
  });
  process.stdin.on('end', () => process.exit(0));
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`listening http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
  });
}

