/**
 * A registry client for the distribution (OCI) v2 API over undici: manifests and blobs down, blobs and
 * manifests up. Hand-written because no kept-up JS client pushes (docs/libraries.md).
 *
 * Authentication follows the registry's challenge, as docker does:
 * - `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` → GET a token from the realm (with
 *   Basic credentials when we have them, anonymous otherwise), cache it per scope, retry once;
 * - `401` with `WWW-Authenticate: Basic` → retry once with Basic credentials (when we have them).
 * Uploads authenticate on their bodiless POST first, so a streamed body is sent once; a 401 on the PUT
 * (a token that expired meanwhile) re-opens the blob and retries once.
 *
 * Redirects (blob GETs go to object stores) are followed by hand, up to 5, and `Authorization` is not
 * sent to another origin. Blob bodies come out through VerifyingStream: digest and size are checked
 * while they stream and a mismatch fails the stream at its end.
 */
import { Readable, pipeline } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { CvmfsError, describeError } from '../errors';
import { sha256Digest, verifyBytes, VerifyingStream, type Digest } from './digest';
import { MANIFEST_ACCEPT } from './manifest';
import type { Credentials } from './image-source';
import { VERSION } from '../version';

export interface RegistryClientOptions {
  readonly credentials?: Credentials;
  /** Plain HTTP instead of HTTPS. */
  readonly plainHttp?: boolean;
  /** Verify TLS certificates (default true). */
  readonly tlsVerify?: boolean;
  readonly userAgent?: string;
  /** Replaces the connection pool (tests); the caller closes it. */
  readonly dispatcher?: Dispatcher;
}

/** An HTTP answer that was not what the operation needs. 404 → E_NOT_FOUND, anything else E_NETWORK. */
export class RegistryError extends CvmfsError {
  constructor(
    readonly url: string,
    readonly status: number | undefined,
    message: string,
    options?: ErrorOptions,
  ) {
    super(status === 404 ? 'E_NOT_FOUND' : 'E_NETWORK', `${url}: ${message}`, options);
  }
}

/** Reads registry credentials from the environment (`CVMFS_TS_REGISTRY_USER` / `_PASSWORD`), if both are set. */
export function credentialsFromEnv(env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const username = env.CVMFS_TS_REGISTRY_USER;
  const password = env.CVMFS_TS_REGISTRY_PASSWORD;
  return username !== undefined && password !== undefined ? { username, password } : undefined;
}

export interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/**
 * `WWW-Authenticate` values → challenges, param names lower-cased. One header may hold several
 * challenges; a token not followed by `=` starts a new one. Quoted values may contain commas
 * (`scope="repository:a:pull,push"`) and backslash escapes.
 */
export function parseChallenges(header: string | readonly string[] | undefined): Challenge[] {
  const values = header === undefined ? [] : typeof header === 'string' ? [header] : header;
  const out: Array<{ scheme: string; params: Record<string, string> }> = [];
  for (const v of values) {
    let i = 0;
    const skip = (chars: RegExp): void => {
      while (i < v.length && chars.test(v[i])) i++;
    };
    const token = (): string => {
      const s = i;
      while (i < v.length && /[^\s,=]/.test(v[i])) i++;
      return v.slice(s, i);
    };
    for (;;) {
      skip(/[\s,]/);
      if (i >= v.length) break;
      const name = token();
      if (name === '') break;
      skip(/\s/);
      if (v[i] !== '=') {
        out.push({ scheme: name, params: {} });
        continue;
      }
      i++;
      skip(/\s/);
      let value = '';
      if (v[i] === '"') {
        for (i++; i < v.length && v[i] !== '"'; i++) value += v[i] === '\\' && i + 1 < v.length ? v[++i] : v[i];
        i++;
      } else {
        const s = i;
        while (i < v.length && /[^\s,]/.test(v[i])) i++;
        value = v.slice(s, i);
      }
      if (out.length > 0) out[out.length - 1].params[name.toLowerCase()] = value;
    }
  }
  return out;
}

interface Response {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Dispatcher.ResponseData['body'];
  readonly url: string;
}

interface RequestSpec {
  readonly method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH';
  /** Path under the registry (`/v2/…`) or an absolute URL (upload locations). */
  readonly target: string;
  readonly scope: string;
  readonly headers?: Record<string, string>;
  /** A factory, so that a retry after a 401 can send the body again. */
  readonly body?: () => Promise<Buffer | Readable> | Buffer | Readable;
}

function header(h: Response['headers'], name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

async function drain(body: Response['body']): Promise<string> {
  try {
    const text = await body.text();
    return text.slice(0, 300);
  } catch {
    return '';
  }
}

const MAX_REDIRECTS = 5;
const MAX_MANIFEST_BYTES = 4 << 20;

export class RegistryClient {
  readonly base: string;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly tokens = new Map<string, string>();
  private useBasic = false;
  private readonly userAgent: string;

  constructor(
    readonly registry: string,
    private readonly options: RegistryClientOptions = {},
  ) {
    this.base = `${options.plainHttp ? 'http' : 'https'}://${registry}`;
    this.ownsDispatcher = options.dispatcher === undefined;
    this.dispatcher = options.dispatcher ?? new Agent({ connect: { rejectUnauthorized: options.tlsVerify !== false } });
    this.userAgent = options.userAgent ?? `cvmfs-ts/${VERSION}`;
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  private basicHeader(): string | undefined {
    const c = this.options.credentials;
    return c ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : undefined;
  }

  private authorization(scope: string): string | undefined {
    const token = this.tokens.get(scope);
    if (token) return `Bearer ${token}`;
    return this.useBasic ? this.basicHeader() : undefined;
  }

  /** One HTTP exchange following redirects; Authorization only to the registry's own origin. */
  private async send(method: RequestSpec['method'], url: string, headers: Record<string, string>, body: Buffer | Readable | undefined): Promise<Response> {
    let current = url;
    const origin = new URL(this.base).origin;
    for (let hop = 0; ; hop++) {
      const h = { 'user-agent': this.userAgent, ...headers };
      if (new URL(current).origin !== origin) delete (h as Record<string, string>).authorization;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(current, { method, headers: h, body: body ?? null, dispatcher: this.dispatcher });
      } catch (e) {
        throw new RegistryError(current, undefined, `${method} failed: ${describeError(e)}`, { cause: e });
      }
      const location = header(res.headers, 'location');
      const redirect = [301, 302, 303, 307, 308].includes(res.statusCode) && location !== undefined && (method === 'GET' || method === 'HEAD');
      if (!redirect) return { status: res.statusCode, headers: res.headers, body: res.body, url: current };
      await drain(res.body);
      if (hop >= MAX_REDIRECTS) throw new RegistryError(url, res.statusCode, `more than ${MAX_REDIRECTS} redirects`);
      current = new URL(location, current).toString();
    }
  }

  /** A request with the auth dance: on a 401 get what the challenge asks for and try once more. */
  private async exchange(spec: RequestSpec): Promise<Response> {
    const url = spec.target.startsWith('http://') || spec.target.startsWith('https://') ? spec.target : `${this.base}${spec.target}`;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...spec.headers };
      const auth = this.authorization(spec.scope);
      if (auth) headers.authorization = auth;
      const res = await this.send(spec.method, url, headers, spec.body ? await spec.body() : undefined);
      if (res.status !== 401 || attempt > 0) return res;
      const challenges = parseChallenges(res.headers['www-authenticate']);
      await drain(res.body);
      const bearer = challenges.find((c) => c.scheme.toLowerCase() === 'bearer');
      const basic = challenges.find((c) => c.scheme.toLowerCase() === 'basic');
      if (bearer) await this.fetchToken(bearer, spec.scope);
      else if (basic && this.options.credentials) this.useBasic = true;
      else throw new RegistryError(url, 401, basic ? 'the registry wants credentials (Basic) and none were given' : 'unauthorized, with no challenge we can answer');
    }
  }

  /** GETs a bearer token for `scope` from the challenge's realm. */
  private async fetchToken(c: Challenge, scope: string): Promise<void> {
    const realm = c.params.realm;
    if (!realm) throw new RegistryError(this.base, 401, 'Bearer challenge without realm');
    const u = new URL(realm);
    if (c.params.service) u.searchParams.set('service', c.params.service);
    // Ask for what this operation needs; a challenge may name a narrower scope (pull for a push).
    for (const s of new Set([scope, ...(c.params.scope ? [c.params.scope] : [])])) u.searchParams.append('scope', s);
    const headers: Record<string, string> = { 'user-agent': this.userAgent };
    const basic = this.basicHeader();
    if (basic) headers.authorization = basic;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(u, { method: 'GET', headers, dispatcher: this.dispatcher });
    } catch (e) {
      throw new RegistryError(u.toString(), undefined, `token request failed: ${describeError(e)}`, { cause: e });
    }
    if (res.statusCode !== 200) {
      throw new RegistryError(u.toString(), res.statusCode, `token request refused (HTTP ${res.statusCode}): ${await drain(res.body)}`);
    }
    let doc: unknown;
    try {
      doc = await res.body.json();
    } catch (e) {
      throw new RegistryError(u.toString(), 200, 'token answer is not JSON', { cause: e });
    }
    const o = (typeof doc === 'object' && doc !== null ? doc : {}) as Record<string, unknown>;
    const token = typeof o.token === 'string' ? o.token : typeof o.access_token === 'string' ? o.access_token : undefined;
    if (!token) throw new RegistryError(u.toString(), 200, 'token answer has no token');
    this.tokens.set(scope, token);
  }

  private async fail(res: Response, what: string): Promise<never> {
    throw new RegistryError(res.url, res.status, `${what}: HTTP ${res.status} ${await drain(res.body)}`.trim());
  }

  /**
   * A manifest or index by tag or digest. Verified against the digest when `reference` is one, else
   * against the `Docker-Content-Digest` the registry states (when it states one).
   */
  async getManifest(repository: string, reference: string): Promise<{ bytes: Buffer; contentType?: string; digest: Digest }> {
    const res = await this.exchange({
      method: 'GET',
      target: `/v2/${repository}/manifests/${reference}`,
      scope: pullScope(repository),
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
    });
    if (res.status !== 200) return this.fail(res, `manifest ${repository}:${reference}`);
    const declared = Number(header(res.headers, 'content-length'));
    if (declared > MAX_MANIFEST_BYTES) {
      await drain(res.body);
      throw new RegistryError(res.url, 200, `manifest of ${declared} bytes is too large`);
    }
    const bytes = Buffer.from(await res.body.arrayBuffer());
    const what = `manifest ${repository}@${reference}`;
    if (reference.startsWith('sha256:')) verifyBytes(bytes, { digest: reference as Digest }, what);
    const stated = header(res.headers, 'docker-content-digest');
    if (stated?.startsWith('sha256:')) verifyBytes(bytes, { digest: stated as Digest }, what);
    return { bytes, contentType: header(res.headers, 'content-type'), digest: sha256Digest(bytes) };
  }

  /** The blob's bytes, verified while they stream (the stream fails at its end on a mismatch). */
  async openBlob(repository: string, desc: { readonly digest: Digest; readonly size?: number }): Promise<Readable> {
    const res = await this.exchange({ method: 'GET', target: `/v2/${repository}/blobs/${desc.digest}`, scope: pullScope(repository) });
    if (res.status !== 200) return this.fail(res, `blob ${desc.digest}`);
    const verify = new VerifyingStream(desc, `${this.registry}/${repository} blob ${desc.digest}`);
    pipeline(res.body, verify, () => {
      // Errors surface on `verify`.
    });
    return verify;
  }

  async hasBlob(repository: string, digest: Digest): Promise<boolean> {
    const res = await this.exchange({ method: 'HEAD', target: `/v2/${repository}/blobs/${digest}`, scope: pushScope(repository) });
    await drain(res.body);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw new RegistryError(res.url, res.status, `HEAD blob ${digest}: HTTP ${res.status}`);
  }

  /** Monolithic upload: POST a session, PUT the whole blob with `?digest=`. The registry checks the digest. */
  async pushBlob(repository: string, blob: PushBlob): Promise<void> {
    const scope = pushScope(repository);
    const start = await this.exchange({ method: 'POST', target: `/v2/${repository}/blobs/uploads/`, scope, headers: { 'content-length': '0' } });
    const location = header(start.headers, 'location');
    await drain(start.body);
    if (start.status !== 202 || !location) throw new RegistryError(start.url, start.status, `starting the upload of ${blob.digest}: HTTP ${start.status}`);
    const u = new URL(location, this.base);
    u.searchParams.set('digest', blob.digest);
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (blob.size !== undefined) headers['content-length'] = String(blob.size);
    const res = await this.exchange({ method: 'PUT', target: u.toString(), scope, headers, body: () => blob.open() });
    if (res.status !== 201) return this.fail(res, `uploading ${blob.digest}`);
    await drain(res.body);
  }

  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<Digest> {
    const res = await this.exchange({
      method: 'PUT',
      target: `/v2/${repository}/manifests/${reference}`,
      scope: pushScope(repository),
      headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
      body: () => bytes,
    });
    if (res.status !== 201) return this.fail(res, `manifest ${repository}:${reference}`);
    await drain(res.body);
    const digest = sha256Digest(bytes);
    const stated = header(res.headers, 'docker-content-digest');
    if (stated && stated !== digest) throw new RegistryError(res.url, 201, `the registry stored the manifest as ${stated}, we sent ${digest}`);
    return digest;
  }
}

export interface PushBlob {
  readonly digest: Digest;
  /** Byte count, sent as Content-Length when known. */
  readonly size?: number;
  /** The blob's bytes; called again if the upload has to be retried. */
  open(): Promise<Readable | Buffer> | Readable | Buffer;
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}
