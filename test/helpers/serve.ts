/**
 * `cvmfs-ts serve` in its own process, as in production. Tests that read a mount must not serve
 * from their own event loop: a blocked test (execFileSync, a thread pool full of reads on the
 * mount) would starve the server the mount depends on.
 */
import { spawn } from 'node:child_process';
import type { Test } from 'tap';
import { BIN } from './cli';

export interface ServedRepository {
  url: string;
  /** Access-log lines so far (one per request). */
  requests(): string[];
  stop(): Promise<void>;
}

export async function serveRepository(t: Test, repoDir: string, prefix = ''): Promise<ServedRepository> {
  const args = [BIN, 'serve', repoDir, '--port', '0', ...(prefix ? ['--prefix', prefix] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((done) => child.on('close', () => done()));
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
  };
  t.teardown(stop);
  const lines: string[] = [];
  let buffered = '';
  const url = await new Promise<string>((done, fail) => {
    child.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      for (const line of parts) {
        const m = /^serving .* at (http:\/\/\S+)$/.exec(line);
        if (m) done(m[1]!);
        else lines.push(line);
      }
    });
    child.on('close', (code) => fail(new Error(`cvmfs-ts serve exited with ${code}`)));
  });
  return { url, requests: () => [...lines], stop };
}
