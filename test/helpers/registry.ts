/**
 * A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, plain
 * HTTP, with a private config and storage in a temporary directory. Optionally with authentication:
 *
 * - `auth: 'token'`: the registry's own `auth.token` config, trusting a throw-away certificate, and a
 *   small token server (node:http) that hands out RS256 JWTs (x5c header) for the scopes asked for —
 *   to clients that send the right Basic credentials. That is Docker Hub's scheme.
 * - `auth: 'basic'`: the registry's `auth.htpasswd` (bcrypt).
 *
 * Both processes and the directory are removed at teardown (servers stopped by their own handles).
 * With `logFile`, the registry's output goes there, access log (one line per request) included.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomUUID, sign } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { open, readFile, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort } from './http';
import { tempDir } from './repo';

export const REGISTRY_BIN = '/usr/bin/docker-registry';
export const USER = 'tester';
export const PASSWORD = 's3cret';
/** bcrypt of PASSWORD (cost 4), made once with crypt(3); htpasswd is not installed here. */
const PASSWORD_BCRYPT = '$2b$04$0Q6aLOBeemDY51Ns66KvOO8dp4AHoZODzUDQdZ6EwQE64BKDwDe0y';
const SERVICE = 'cvmfs-ts-test-registry';
const ISSUER = 'cvmfs-ts-test-issuer';

export type RegistryAuth = 'none' | 'token' | 'basic';

export interface RegistryOptions {
  /** Default 'none'. */
  readonly auth?: RegistryAuth;
  /** Serve HTTPS with a self-signed certificate for 127.0.0.1 (clients must not verify it). */
  readonly tls?: boolean;
  /** Append the registry's output, with its access log, to this file (default: no access log). */
  readonly logFile?: string;
}

export interface TokenRequest {
  readonly scopes: readonly string[];
  readonly service: string | null;
  /** The Basic user name the client sent, if any. */
  readonly user: string | undefined;
  readonly granted: boolean;
}

export interface TestRegistry {
  /** host:port, as in docker://HOST:PORT/name:tag. */
  readonly host: string;
  readonly auth: RegistryAuth;
  readonly dir: string;
  /** Token requests seen by the token server (auth 'token'). */
  readonly tokenRequests: TokenRequest[];
  /** skopeo flags that authenticate (empty for 'none'). */
  readonly skopeoCreds: (direction: 'src' | 'dest') => string[];
  stop(): Promise<void>;
}

export function registryMissing(): string | undefined {
  if (!existsSync(REGISTRY_BIN)) return `${REGISTRY_BIN} is not installed (apt-get install docker-registry)`;
  if (!existsSync('/usr/bin/skopeo')) return 'skopeo is not installed (apt-get install skopeo)';
  return undefined;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** A token server answering GET /token for anyone with USER:PASSWORD. */
async function startTokenServer(t: Test, dir: string, requests: TokenRequest[]): Promise<{ port: number; certFile: string }> {
  const keyFile = join(dir, 'token.key');
  const certFile = join(dir, 'token.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cvmfs-ts-test-token'], {
    stdio: 'ignore',
  });
  const key = await readFile(keyFile, 'utf8');
  const certDer = Buffer.from(
    (await readFile(certFile, 'utf8')).replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, ''),
    'base64',
  );
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const auth = req.headers.authorization;
    const [user, pass] = auth?.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString().split(':') : [undefined, undefined];
    const granted = user === USER && pass === PASSWORD;
    const scopes = u.searchParams.getAll('scope');
    requests.push({ scopes, service: u.searchParams.get('service'), user, granted });
    if (u.pathname !== '/token' || !granted) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
      return;
    }
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop() ?? '';
      return { type, name: rest.join(':'), actions: actions.split(',') };
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] };
    const claims = { iss: ISSUER, sub: user, aud: SERVICE, exp: now + 600, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const token = `${signingInput}.${b64url(sign('sha256', Buffer.from(signingInput), key))}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 600, issued_at: new Date(now * 1000).toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  return { port: (server.address() as net.AddressInfo).port, certFile };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts a registry (and its token server) and registers their stop at teardown. Push to it with
 * `ctr images push --plain-http HOST/NAME:TAG` or skopeo (`skopeoCreds`).
 */
export async function startRegistry(t: Test, options: RegistryOptions = {}): Promise<TestRegistry> {
  const { auth = 'none', tls = false, logFile } = options;
  const dir = await tempDir(t, 'cvmfs-ts-registry-');
  await mkdir(join(dir, 'storage'));
  const port = await freePort();
  const tokenRequests: TokenRequest[] = [];
  const lines = [
    'version: 0.1',
    'log:',
    '  level: warn',
    ...(logFile ? [] : ['  accesslog:', '    disabled: true']),
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${join(dir, 'storage')}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${createHash('sha256').update(dir).digest('hex')}`,
  ];
  if (tls) {
    const key = join(dir, 'tls.key');
    const cert = join(dir, 'tls.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], {
      stdio: 'ignore',
    });
    lines.push('  tls:', `    certificate: ${cert}`, `    key: ${key}`);
  }
  if (auth === 'token') {
    const ts = await startTokenServer(t, dir, tokenRequests);
    lines.push('auth:', '  token:', `    realm: http://127.0.0.1:${ts.port}/token`, `    service: ${SERVICE}`, `    issuer: ${ISSUER}`, `    rootcertbundle: ${ts.certFile}`);
  } else if (auth === 'basic') {
    await writeFile(join(dir, 'htpasswd'), `${USER}:${PASSWORD_BCRYPT}\n`);
    lines.push('auth:', '  htpasswd:', '    realm: cvmfs-ts-test', `    path: ${join(dir, 'htpasswd')}`);
  }
  const conf = join(dir, 'config.yml');
  await writeFile(conf, `${lines.join('\n')}\n`);
  const log = logFile ? await open(logFile, 'a') : undefined;
  const child = spawn(REGISTRY_BIN, ['serve', conf], { cwd: dir, stdio: ['ignore', log?.fd ?? 'pipe', log?.fd ?? 'pipe'] });
  await log?.close();
  let piped = '';
  child.stdout?.on('data', (d: Buffer) => (piped += d));
  child.stderr?.on('data', (d: Buffer) => (piped += d));
  const output = async (): Promise<string> => (logFile ? readFile(logFile, 'utf8').catch(() => '') : piped);
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  };
  t.teardown(stop);
  const deadline = Date.now() + 20_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`docker-registry exited before listening:\n${await output()}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not listen on 127.0.0.1:${port} within 20 s:\n${await output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const creds = auth === 'none' ? [] : [`${USER}:${PASSWORD}`];
  return {
    host: `127.0.0.1:${port}`,
    auth,
    dir,
    tokenRequests,
    skopeoCreds: (direction) => creds.flatMap((c) => [`--${direction}-creds`, c]),
    stop,
  };
}
