/**
 * Where repository files come from for tools that read a whole repository (inspect, the
 * publisher's view of the previous revision, fixture checks): a local directory or an HTTP URL.
 * The client's mount uses its own cached, failover-aware fetcher instead.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { CvmfsError } from '../errors';

export interface ObjectSource {
  /** Human-readable location, for messages. */
  readonly location: string;
  /** Bytes of a file relative to the repository root (e.g. `.cvmfspublished`, `data/ab/cd…C`). */
  get(relativePath: string): Promise<Buffer>;
  /** Like get, but undefined when the file does not exist. */
  getOptional(relativePath: string): Promise<Buffer | undefined>;
  close(): Promise<void>;
}

export class NotFoundError extends CvmfsError {
  constructor(readonly location: string) {
    super('E_NOT_FOUND', `${location} does not exist`);
  }
}

export class DirectorySource implements ObjectSource {
  readonly location: string;
  constructor(root: string) {
    this.location = resolve(root);
  }
  async get(relativePath: string): Promise<Buffer> {
    const file = join(this.location, relativePath);
    try {
      return await readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(file);
      throw new CvmfsError('E_IO', `${file}: cannot read (${(e as NodeJS.ErrnoException).code})`, { cause: e });
    }
  }
  async getOptional(relativePath: string): Promise<Buffer | undefined> {
    return this.get(relativePath).catch((e) => {
      if (CvmfsError.is(e, 'E_NOT_FOUND')) return undefined;
      throw e;
    });
  }
  async close(): Promise<void> {}
}

export class HttpSource implements ObjectSource {
  readonly location: string;
  constructor(
    baseUrl: string,
    private readonly timeoutMs = 30_000,
  ) {
    this.location = baseUrl.replace(/\/+$/, '');
  }
  async get(relativePath: string): Promise<Buffer> {
    const url = `${this.location}/${relativePath}`;
    let response;
    try {
      response = await request(url, { headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs });
    } catch (e) {
      throw new CvmfsError('E_NETWORK', `${url}: ${(e as Error).message}`, { cause: e });
    }
    if (response.statusCode === 404) {
      await response.body.dump();
      throw new NotFoundError(url);
    }
    if (response.statusCode !== 200) {
      await response.body.dump();
      throw new CvmfsError('E_NETWORK', `${url}: HTTP ${response.statusCode}`);
    }
    return Buffer.from(await response.body.arrayBuffer());
  }
  async getOptional(relativePath: string): Promise<Buffer | undefined> {
    return this.get(relativePath).catch((e) => {
      if (CvmfsError.is(e, 'E_NOT_FOUND')) return undefined;
      throw e;
    });
  }
  async close(): Promise<void> {}
}

export function openSource(urlOrDir: string): ObjectSource {
  return /^https?:\/\//.test(urlOrDir) ? new HttpSource(urlOrDir) : new DirectorySource(urlOrDir);
}
