/** Runs the built `cvmfs-ts` command as users do, in its own process. */
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

export const BIN = resolve(__dirname, '../../bin/cvmfs-ts');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], o: { prefix?: string[]; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  const argv = [...(o.prefix ?? []), process.execPath, BIN, ...args];
  return new Promise((done, fail) => {
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}
