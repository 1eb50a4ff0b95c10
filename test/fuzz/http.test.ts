/**
 * Fuzzing the download path (Fetcher → Downloader → DiskCache) with broken HTTP answers for real objects
 * of the fixture: mutated bodies, truncation, wrong Content-Length, cut or malformed chunked encoding,
 * random status codes and redirects, huge headers, garbage instead of a response, resets, stalls and slow
 * drips against small timeouts, a server that ignores Range or answers the wrong range.
 *
 * Each fetch either returns a cache path whose content is exactly the object (and only when at least one
 * answer could have carried the right bytes) or throws a CvmfsError; afterwards nothing is in flight,
 * txn/ is empty and no object is in the cache unless it is the right one. The same answers also go to
 * `getRaw` (manifest downloads) and external-file range requests.
 *
 * Each case draws a plan of 1–6 answers; the server gives them out in order to the requests it gets
 * (a hash mismatch makes the fetcher ask again with no-cache, a redirect is followed to the next answer).
 * The server is node:net, not node:http: node:http would fix up exactly the framing errors that the
 * mutants need to send (Content-Length, chunked encoding, status lines). Several lanes (server, cache,
 * downloader, fetcher each) run cases side by side: a case mostly waits for I/O.
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { inflateSync } from 'node:zlib';
import { DiskCache } from '../../src/cache/disk-cache';
import { Downloader } from '../../src/net/downloader';
import { Fetcher, type ObjectRequest } from '../../src/fetch/fetcher';
import { CatalogDb } from '../../src/catalog/catalog-db';
import { ContentHash, HashAlgorithm, type ObjectSuffix } from '../../src/format/hash';
import { objectPath } from '../../src/format/object-name';
import { verifyManifest } from '../../src/format/manifest';
import { parseCertificate } from '../../src/format/certificate';
import { CvmfsError } from '../../src/errors';
import { testOptions } from '../net/servers';
import { check, FuzzFailure, fuzzConfig, fuzzLoopAsync, mutate, Rng, Tally } from '../helpers/fuzz';

const FIXTURE = resolve(__dirname, '../../../shared/fixtures/real-small');
const REPO = join(FIXTURE, 'repo');
const FQRN = 'fixture.cvmfs.io';
// The bound is generous: ~2 ms a case alone, but CI runs two test files at once on two cores.
const cfg = fuzzConfig(180);
/** Downloader timeouts: small, so that stalls cost little; a loaded machine may make good answers fail (allowed). */
const TIMEOUT_S = 0.12;

// ---------------------------------------------------------------------------------------------------
// Objects

interface Target {
  readonly name: string;
  readonly req: ObjectRequest;
  /** The server path (below the base URL) and what the server holds there. */
  readonly path: string;
  readonly stored: Buffer;
  /** What the cache must hold after a successful fetch. */
  readonly content: Buffer;
  readonly weight: number;
}

const manifestBytes = readFileSync(join(REPO, '.cvmfspublished'));
const manifestText = manifestBytes.toString('latin1');
const CERT = parseCertificate(readFileSync(join(FIXTURE, 'keys', `${FQRN}.crt`)));
const rootHash = ContentHash.parse(/^C(.*)$/m.exec(manifestText)![1]!);
const certHash = ContentHash.parse(/^X(.*)$/m.exec(manifestText)![1]!);

function stored(hash: ContentHash, suffix: ObjectSuffix): Buffer {
  return readFileSync(join(REPO, objectPath(hash, suffix)));
}

function target(name: string, hash: ContentHash, suffix: ObjectSuffix, size: number | undefined, weight: number): Target {
  const bytes = stored(hash, suffix);
  return {
    name,
    req: { hash, suffix, compressed: true, size, description: name },
    path: `/${objectPath(hash, suffix)}`,
    stored: bytes,
    content: inflateSync(bytes),
    weight,
  };
}

const dir = mkdtempSync(join(tmpdir(), 'cvmfs-ts-fuzz-http-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const TARGETS: Target[] = (() => {
  const tmp = join(dir, 'root.db');
  writeFileSync(tmp, inflateSync(stored(rootHash, 'C')));
  const db = new CatalogDb(tmp);
  try {
    const file = (p: string, weight: number): Target => {
      const e = db.lookup(p)!;
      return target(p, e.hash!, '', e.size, weight);
    };
    const big = db.lookup('/random-1.5M.bin')!;
    const chunk = db.chunks('/random-1.5M.bin', big)[3]!;
    const text = file('/text.txt', 30);
    const list: Target[] = [
      text,
      file('/one-byte.txt', 10),
      file('/empty.txt', 6),
      file('/xattr.txt', 6),
      target('certificate', certHash, 'X', undefined, 8),
      target('nested catalog', db.nestedCatalogs()[0]!.hash!, 'C', db.nestedCatalogs()[0]!.size, 6),
      target('/random-1.5M.bin chunk 3', chunk.hash, 'P', chunk.size, 2),
      // the same stored bytes fetched as an uncompressed object: the cache then holds them as they are
      { ...text, name: '/text.txt (as stored)', req: { ...text.req, compressed: false, size: text.stored.length }, content: text.stored, weight: 8 },
    ];
    return list;
  } finally {
    db.close();
    unlinkSync(tmp);
  }
})();

/** An "external file": plain bytes at a path of their own, fetched by byte range (§7.1). */
const EXTERNAL_PATH = '/external/data file.bin';
const EXTERNAL = TARGETS.find((x) => x.name === 'nested catalog')!.content; // 57 KB of real bytes
const ESCAPED_EXTERNAL_PATH = '/external/data%20file.bin';

const FILES = new Map<string, Buffer>([
  ...TARGETS.map((x) => [x.path, x.stored] as [string, Buffer]),
  ['/.cvmfspublished', manifestBytes],
  [ESCAPED_EXTERNAL_PATH, EXTERNAL],
]);

// ---------------------------------------------------------------------------------------------------
// The server: answers each request with the next step of the current case's plan

type Kind =
  | 'ok' | 'ok-chunked' | 'ok-close' | 'ok-split' | 'ok-drip' | 'ok-continue' | 'ok-gzip-header' | 'ok-206' | 'ok-no-range'
  | 'mutated' | 'mutated-chunked' | 'wrong-object' | 'empty'
  | 'cl-long' | 'cl-short' | 'cl-dup' | 'cl-and-chunked' | 'cl-garbage'
  | 'chunked-cut' | 'chunked-bad'
  | 'status' | 'redirect' | 'huge-header' | 'bad-status-line' | 'garbage' | 'reset' | 'close'
  | 'stall-headers' | 'stall-body' | 'wrong-range';

interface Step {
  readonly kind: Kind;
  readonly rng: Rng;
}

const KINDS: readonly (readonly [number, Kind])[] = [
  [30, 'ok'], [5, 'ok-chunked'], [3, 'ok-close'], [3, 'ok-split'], [0.4, 'ok-drip'], [1, 'ok-continue'],
  [1, 'ok-gzip-header'], [1, 'ok-206'], [1, 'ok-no-range'],
  [20, 'mutated'], [3, 'mutated-chunked'], [2, 'wrong-object'], [1, 'empty'],
  [3, 'cl-long'], [3, 'cl-short'], [1, 'cl-dup'], [1, 'cl-and-chunked'], [1, 'cl-garbage'],
  [3, 'chunked-cut'], [2, 'chunked-bad'],
  [6, 'status'], [3, 'redirect'], [2, 'huge-header'], [2, 'bad-status-line'], [2, 'garbage'], [2, 'reset'], [1, 'close'],
  [0.12, 'stall-headers'], [0.12, 'stall-body'], [1, 'wrong-range'],
];

interface Served {
  readonly kind: Kind;
  readonly path: string;
  /** The answer could have delivered exactly the right bytes (so a successful fetch is plausible). */
  readonly mayBeIntact: boolean;
}

const STATUSES = [100, 101, 102, 103, 199, 200, 201, 202, 203, 204, 205, 206, 226, 299, 300, 304, 305, 400, 401, 403, 404, 405, 407, 410, 412, 416, 418, 429, 500, 501, 502, 503, 504, 505, 599];

class FaultServer {
  private server!: net.Server;
  private readonly sockets = new Set<net.Socket>();
  plan: Step[] = [];
  served: Served[] = [];
  port = 0;

  async start(): Promise<void> {
    this.server = net.createServer((sock) => this.accept(sock));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private accept(sock: net.Socket): void {
    this.sockets.add(sock);
    const timers = new Set<NodeJS.Timeout>();
    let buffered = Buffer.alloc(0);
    let busy = false;
    sock.on('error', () => undefined);
    sock.on('close', () => {
      this.sockets.delete(sock);
      for (const tm of timers) clearTimeout(tm);
    });
    const later = (ms: number, fn: () => void) => {
      const tm = setTimeout(() => {
        timers.delete(tm);
        if (!sock.destroyed) fn();
      }, ms);
      timers.add(tm);
    };
    const pump = (): void => {
      if (busy) return;
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buffered.subarray(0, end).toString('latin1');
      buffered = buffered.subarray(end + 4);
      busy = true;
      const [line, ...headerLines] = head.split('\r\n');
      const path = (line ?? '').split(' ')[1] ?? '';
      const range = headerLines.find((h) => /^range:/i.test(h))?.replace(/^range:\s*/i, '');
      this.answer(sock, path, range, later, () => {
        busy = false;
        pump();
      });
    };
    sock.on('data', (d: Buffer) => {
      buffered = Buffer.concat([buffered, d]);
      pump();
    });
  }

  /** Writes the answer of the next plan step; `done` when the connection may carry the next request. */
  private answer(
    sock: net.Socket,
    path: string,
    range: string | undefined,
    later: (ms: number, fn: () => void) => void,
    done: () => void,
  ): void {
    const step = this.plan.shift();
    const file = FILES.get(path);
    const send = (b: Buffer | string) => {
      if (!sock.destroyed) sock.write(b);
    };
    const record = (mayBeIntact: boolean) => this.served.push({ kind: step?.kind ?? 'status', path, mayBeIntact: mayBeIntact && file !== undefined });
    const head = (status: number | string, headers: [string, string | number][]): string =>
      `HTTP/1.1 ${status} X\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
    if (!step || !file) {
      record(false);
      send(head(step ? 404 : 503, [['Content-Length', 0]]));
      done();
      return;
    }
    const rng = step.rng;
    // The bytes a correct answer carries: the range when one was asked for and the step honours it.
    const m = range ? /^bytes=(\d+)-(\d+)$/.exec(range) : null;
    const ranged = m ? file.subarray(Number(m[1]), Number(m[2]) + 1) : file;
    const body = ranged;
    const status = m ? 206 : 200;
    const rangeHeaders: [string, string | number][] = m ? [['Content-Range', `bytes ${m[1]}-${m[2]}/${file.length}`]] : [];
    /** Whether an answer with body `b` hands the client exactly the right bytes (a range is cut to its size). */
    const carries = (b: Buffer): boolean => (m ? b.length >= body.length && b.subarray(0, body.length).equals(body) : b.equals(body));
    const plain = (b: Buffer, extra: [string, string | number][] = []) =>
      send(Buffer.concat([Buffer.from(head(status, [['Content-Length', b.length], ...rangeHeaders, ...extra])), b]));
    const chunked = (b: Buffer, o: { cut?: boolean; bad?: boolean; extra?: [string, string | number][] } = {}): void => {
      const parts: Buffer[] = [Buffer.from(head(status, [...(o.extra ?? []), ['Transfer-Encoding', 'chunked'], ...rangeHeaders]))];
      let pos = 0;
      while (pos < b.length) {
        const n = Math.min(b.length - pos, rng.range(1, 4096));
        const sizeText = rng.bool(0.2) ? n.toString(16).toUpperCase() : n.toString(16);
        parts.push(Buffer.from(`${sizeText}${rng.bool(0.1) ? ';ext=1' : ''}\r\n`), b.subarray(pos, pos + n), Buffer.from('\r\n'));
        pos += n;
        if (o.bad && rng.bool(0.3)) parts.push(Buffer.from(rng.pick(['zz\r\n', '-1\r\n', 'ffffffffffffffff\r\n', '\r\n', ' 10\r\n', '1 0\r\n'])));
      }
      if (o.bad) parts.push(Buffer.from(rng.pick(['0\r\n', '0\r\nX-Trailer: 1\r\n\r\n', 'g\r\n\r\n', '', '00\r\n\r\n'])));
      else parts.push(Buffer.from(rng.bool(0.1) ? '0\r\nX-Trailer: yes\r\n\r\n' : '0\r\n\r\n'));
      const all = Buffer.concat(parts);
      send(o.cut ? all.subarray(0, all.length - 1 - rng.int(Math.max(1, all.length - parts[0]!.length))) : all);
    };

    switch (step.kind) {
      case 'ok':
        record(true);
        plain(body);
        return done();
      case 'ok-206':
        record(true);
        send(Buffer.concat([Buffer.from(head(206, [['Content-Length', body.length], ['Content-Range', `bytes ${m ? m[1] : 0}-${m ? m[2] : body.length - 1}/${file.length}`]])), body]));
        return done();
      case 'ok-no-range': // a server that ignores Range: the downloader cuts the range out itself
        record(true);
        send(Buffer.concat([Buffer.from(head(200, [['Content-Length', file.length]])), file]));
        return done();
      case 'ok-chunked':
        record(true);
        chunked(body);
        return done();
      case 'ok-close':
        record(true);
        send(Buffer.concat([Buffer.from(`HTTP/1.0 ${status} OK\r\nConnection: close\r\n${rangeHeaders.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`), body]));
        sock.end();
        return;
      case 'ok-split': {
        record(true);
        const all = Buffer.concat([Buffer.from(head(status, [['Content-Length', body.length], ...rangeHeaders])), body]);
        let pos = 0;
        const next = (): void => {
          if (pos >= all.length) return done();
          const n = pos < 600 ? rng.range(1, 64) : all.length; // small pieces at first, then the rest
          send(all.subarray(pos, pos + n));
          pos += n;
          setImmediate(next);
        };
        next();
        return;
      }
      case 'ok-drip': {
        // slow but within the timeout: a few pieces a few milliseconds apart
        record(true);
        const all = Buffer.concat([Buffer.from(head(status, [['Content-Length', body.length], ...rangeHeaders])), body]);
        const pieces = rng.range(2, 4);
        const size = Math.ceil(all.length / pieces);
        let i = 0;
        const next = (): void => {
          send(all.subarray(i * size, (i + 1) * size));
          if (++i >= pieces) return done();
          later(rng.range(2, 10), next);
        };
        next();
        return;
      }
      case 'ok-continue':
        record(true);
        send(`HTTP/1.1 ${rng.pick([100, 103])} Continue\r\n\r\n`);
        plain(body);
        return done();
      case 'ok-gzip-header':
        record(true);
        plain(body, [['Content-Encoding', rng.pick(['gzip', 'deflate', 'br', 'x-nonsense'])]]);
        return done();
      case 'mutated':
      case 'mutated-chunked': {
        const b = mutate(rng, body, { max: 3 });
        record(carries(b));
        if (step.kind === 'mutated') plain(b);
        else chunked(b);
        return done();
      }
      case 'wrong-object': {
        const other = rng.pick([...FILES.values()]);
        record(carries(other));
        plain(other);
        return done();
      }
      case 'empty':
        record(body.length === 0);
        plain(Buffer.alloc(0));
        return done();
      case 'cl-long':
        record(false);
        send(Buffer.concat([Buffer.from(head(status, [['Content-Length', body.length + rng.range(1, 100)], ...rangeHeaders])), body]));
        sock.end();
        return;
      case 'cl-short': {
        const short = rng.int(Math.max(1, body.length));
        record(short >= body.length);
        send(Buffer.concat([Buffer.from(head(status, [['Content-Length', short], ...rangeHeaders])), body]));
        if (rng.bool(0.5)) sock.end();
        else done(); // the rest of the body stays on the connection as the "next answer"
        return;
      }
      case 'cl-dup': {
        const same = rng.bool();
        record(same);
        send(Buffer.concat([Buffer.from(head(status, [['Content-Length', body.length], ['Content-Length', same ? body.length : body.length + 1], ...rangeHeaders])), body]));
        return done();
      }
      case 'cl-and-chunked':
        record(true);
        chunked(body, { extra: [['Content-Length', body.length + 7]] });
        return done();
      case 'cl-garbage':
        record(false);
        send(Buffer.concat([Buffer.from(head(status, [['Content-Length', rng.pick(['-1', 'abc', '1e3', '0x10', ' ', '99999999999999999999', `${body.length}, ${body.length}`])]])), body]));
        sock.end();
        return;
      case 'chunked-cut':
        record(false);
        chunked(body, { cut: true });
        sock.end();
        return;
      case 'chunked-bad':
        record(true); // some "bad" encodings are still readable
        chunked(body, { bad: true });
        sock.end();
        return;
      case 'status': {
        const s = rng.pick(STATUSES);
        const withBody = rng.bool(0.5);
        // 1xx answers are informational: a final answer must follow (here: nothing, or the body)
        record(s === 200 || s === 206 || (s >= 100 && s < 200 && s !== 101 && withBody));
        if (s >= 100 && s < 200) {
          send(`HTTP/1.1 ${s} Info\r\n\r\n`);
          if (withBody && s !== 101) plain(body);
          else sock.end();
          return s === 101 ? undefined : done();
        }
        send(Buffer.concat([Buffer.from(head(s, [['Content-Length', withBody ? body.length : 0]])), withBody ? body : Buffer.alloc(0)]));
        return done();
      }
      case 'redirect': {
        // to the same object (the next plan step answers), somewhere else, or nowhere
        record(false);
        const loc = rng.pick([path, path, `${this.url}${path}`, '/nowhere', 'http://127.0.0.1:1/x', 'ftp://x/y', 'http://[', '', 'http://127.0.0.1:' + this.port]);
        send(head(rng.pick([301, 302, 303, 307, 308]), [['Location', loc], ['Content-Length', 0]]));
        return done();
      }
      case 'huge-header': {
        const n = rng.pick([1000, 8000, 15000, 17000, 64000, 600000]);
        record(true);
        plain(body, [[`X-${rng.bool() ? 'Big' : 'B'.repeat(n)}`, 'v'.repeat(n)]]);
        return done();
      }
      case 'bad-status-line':
        record(false);
        send(`${rng.pick(['HTTP/1.1 abc OK', 'HTTP/2 200 OK', 'HTTP/1.1', 'HTTP/1.1 2000 OK', 'ICY 200 OK', 'HTTP/1.1 -200 X', 'HTTP/1.1  200 OK'])}\r\nContent-Length: ${body.length}\r\n\r\n`);
        send(body);
        sock.end();
        return;
      case 'garbage':
        record(false);
        send(rng.bytes(rng.range(1, 200)));
        sock.end();
        return;
      case 'reset':
        record(false);
        if (rng.bool()) send(Buffer.concat([Buffer.from(head(status, [['Content-Length', body.length]])), body.subarray(0, rng.int(body.length))]));
        sock.resetAndDestroy();
        return;
      case 'close':
        record(false);
        sock.end();
        return;
      case 'stall-headers':
        record(false);
        later(TIMEOUT_S * 1000 * 3, () => sock.end()); // the client times out first
        return;
      case 'stall-body':
        record(false);
        send(Buffer.concat([Buffer.from(head(status, [['Content-Length', body.length], ...rangeHeaders])), body.subarray(0, rng.int(body.length))]));
        later(TIMEOUT_S * 1000 * 3, () => sock.end());
        return;
      case 'wrong-range':
        record(!m);
        send(Buffer.concat([Buffer.from(head(206, [['Content-Length', body.length], ['Content-Range', `bytes ${m ? Number(m[1]) + 1 : 1}-${file.length}/${file.length}`]])), body]));
        return done();
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The loop

/** FUZZ_HTTP_KINDS=ok,mutated,… limits the answers to those kinds (for chasing one problem). */
const ONLY_KINDS = process.env.FUZZ_HTTP_KINDS?.split(',');
const USED_KINDS = ONLY_KINDS ? KINDS.filter(([, k]) => ONLY_KINDS.includes(k)) : KINDS;

function plan(rng: Rng): Step[] {
  const steps: Step[] = [];
  const n = rng.range(1, 6);
  for (let i = 0; i < n; i++) steps.push({ kind: rng.weighted(USED_KINDS), rng: new Rng(rng.u32(), i) });
  return steps;
}

function cachedObjects(cache: DiskCache): string[] {
  const out: string[] = [];
  for (const d of readdirSync(cache.dir)) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of readdirSync(join(cache.dir, d))) out.push(join(cache.dir, d, f));
  }
  return out;
}

/** One independent rig: its own server, cache, downloader and fetcher, so lanes can run side by side. */
interface Lane {
  readonly server: FaultServer;
  readonly cache: DiskCache;
  readonly fetcher: Fetcher;
  /** The fetcher's downloads (leaders) still running, also those every caller has given up on. */
  readonly leads: Set<Promise<unknown>>;
}

async function makeLane(t: Test, n: number): Promise<Lane> {
  const server = new FaultServer();
  await server.start();
  t.teardown(() => server.close());
  const cache = new DiskCache(join(dir, `cache-${n}`));
  await cache.init();
  const downloader = new Downloader(
    testOptions({
      serverUrls: [server.url],
      proxyGroups: [['DIRECT']],
      timeoutS: TIMEOUT_S,
      timeoutDirectS: TIMEOUT_S,
      maxRetries: 0,
      backoffInitS: 0,
      backoffMaxS: 0,
      lowSpeedLimit: 1,
      followRedirects: true,
    }),
  );
  t.teardown(() => downloader.close());
  const fetcher = new Fetcher(cache, downloader, { externalUrls: [server.url] });
  // Test-only look inside: an aborted caller returns at once while its download is cancelled in the
  // background; the case must wait for that before it checks txn/ (and before the next case's answers).
  const leads = new Set<Promise<unknown>>();
  const inner = fetcher as unknown as { lead?: (...a: unknown[]) => Promise<unknown> };
  if (typeof inner.lead === 'function') {
    const lead = inner.lead.bind(fetcher);
    inner.lead = (...a: unknown[]) => {
      const p = lead(...a);
      leads.add(p);
      p.then(() => leads.delete(p), () => leads.delete(p));
      return p;
    };
  }
  return { server, cache, fetcher, leads };
}

/** FUZZ_HTTP_LANES: rigs working side by side (most of a case is waiting for I/O). */
const LANES = Number(process.env.FUZZ_HTTP_LANES ?? 8);

t.test('fetches through broken HTTP answers', async (t) => {
  const lanes = await Promise.all(Array.from({ length: LANES }, (_, n) => makeLane(t, n)));

  // Good answers: every target fetches (a few tries: the first requests also load code, against a short timeout).
  let good = 0;
  for (const x of TARGETS) {
    for (const lane of lanes) {
      let ok = false;
      for (let tries = 0; tries < 5 && !ok; tries++) {
        lane.server.plan = [{ kind: 'ok', rng: new Rng(1) }];
        try {
          const p = await lane.fetcher.fetch(x.req);
          ok = readFileSync(p).equals(x.content);
          unlinkSync(p);
        } catch {
          // try again
        }
      }
      if (ok) good++;
      else t.fail(`${x.name} does not fetch with good answers`);
    }
  }
  t.equal(good, TARGETS.length * lanes.length, 'every target fetches with good answers, on every lane');

  const tally = new Tally();
  let committed = 0;
  let fetchCalls = 0;
  let quarantined = 0;
  const sentinel = new Error('aborted by the fuzz test');
  const kindMs = new Map<string, [number, number]>();

  async function oneCase(rng: Rng, lane: Lane): Promise<void> {
    const { server, cache, fetcher } = lane;
    server.plan = plan(rng);
    server.served = [];
    const mode = rng.weighted([[80, 'fetch'], [7, 'concurrent'], [3, 'abort'], [5, 'raw'], [5, 'external']] as const);
    const planText = () =>
      `${mode}; plan ${server.plan.length} left; served ${server.served.map((s) => `${s.kind}${s.mayBeIntact ? '+' : ''}`).join(',')}`;

    if (mode === 'raw') {
      const maxBytes = rng.bool(0.2) ? rng.int(2 * manifestBytes.length) : undefined;
      let data: Buffer;
      try {
        data = await fetcher.getRaw('.cvmfspublished', { maxBytes });
        tally.add('raw:ok');
      } catch (e) {
        check(CvmfsError.is(e), `getRaw threw ${String(e)} (${planText()})`);
        tally.add(`raw:${e.code}`);
        return;
      }
      try {
        verifyManifest(data, FQRN, CERT.publicKey);
        check(data.equals(manifestBytes), `a changed manifest verified (${planText()})`);
        check(server.served.some((s) => s.mayBeIntact), `getRaw returned the manifest though no answer carried it (${planText()})`);
      } catch (e) {
        if (e instanceof FuzzFailure) throw e;
        check(CvmfsError.is(e), `verifyManifest threw ${String(e)}`);
      }
      return;
    }

    let x: Target;
    let req: ObjectRequest;
    if (mode === 'external') {
      const offset = rng.int(EXTERNAL.length - 1);
      const size = rng.range(1, Math.min(8192, EXTERNAL.length - offset));
      const content = EXTERNAL.subarray(offset, offset + size);
      const hash = ContentHash.compute(HashAlgorithm.Sha1, content);
      req = { hash, suffix: '', compressed: false, size, description: 'external', external: { path: EXTERNAL_PATH, range: { offset, size } } };
      x = { name: `external range ${offset}+${size}`, req, path: ESCAPED_EXTERNAL_PATH, stored: EXTERNAL, content, weight: 0 };
    } else {
      x = rng.weighted(TARGETS.map((tg) => [tg.weight, tg] as const));
      const size = rng.weighted<number | undefined>([[85, x.req.size], [10, undefined], [5, (x.req.size ?? x.content.length) + rng.range(-2, 2)]]);
      req = { ...x.req, size };
    }
    const sizeRight = req.size === undefined || req.size === x.content.length;

    const callers = mode === 'concurrent' ? rng.range(2, 4) : 1;
    fetchCalls += callers;
    const controller = mode === 'abort' ? new AbortController() : undefined;
    if (controller) setTimeout(() => controller.abort(sentinel), rng.int(30));
    const results = await Promise.all(
      Array.from({ length: callers }, () =>
        fetcher.fetch({ ...req, signal: controller?.signal }).then(
          (path) => ({ ok: true as const, path }),
          (error: unknown) => ({ ok: false as const, error }),
        ),
      ),
    );
    await Promise.allSettled([...lane.leads]);
    check(fetcher.inflightCount === 0, `a download is still registered in flight (${planText()})`);

    for (const r of results) {
      if (r.ok) {
        tally.add(`${mode}:ok`);
        // (its content is checked below, with whatever else is in the cache)
        check(r.path === cache.pathOf(req.hash), `fetch of ${x.name} returned ${r.path}, not its cache path`);
        check(sizeRight, `fetch of ${x.name} accepted a size the catalog does not give (${planText()})`);
        check(
          server.served.some((s) => s.mayBeIntact) || server.served.length === 0,
          `fetch of ${x.name} succeeded though no answer carried the object (${planText()})`,
        );
      } else if (r.error === sentinel) {
        tally.add(`${mode}:aborted`);
      } else {
        const e = r.error;
        check(CvmfsError.is(e), `fetch of ${x.name} threw ${e instanceof Error ? `${e.constructor.name}: ${e.stack}` : String(e)} (${planText()})`);
        tally.add(`${mode}:${e.code}`);
      }
    }
    const paths = new Set(results.filter((r) => r.ok).map((r) => (r as { path: string }).path));
    check(paths.size <= 1, 'concurrent callers got different paths');

    const left = readdirSync(cache.txnDir);
    check(left.length === 0, `txn/ holds ${left.join(', ')} after a fetch of ${x.name} (${planText()})`);
    // Whatever is in the cache now must be the right object; it is removed so that the next case downloads
    // again. (A caller that gave up does not stop a download that already arrived from being committed.)
    const p = cache.pathOf(req.hash);
    let cached: Buffer | undefined;
    try {
      cached = readFileSync(p);
    } catch {
      check(paths.size === 0, `fetch of ${x.name} returned ${[...paths][0]}, which is not there`);
    }
    if (cached) {
      check(
        cached.equals(x.content),
        `${paths.size > 0 ? 'fetch returned' : 'the cache holds'} a wrong ${x.name} (${cached.length} bytes) (${planText()})`,
      );
      unlinkSync(p);
      committed++;
    }
    if (!sizeRight) {
      // verified bytes of the wrong size are kept for post-mortem under the hash's name; any other
      // quarantined file stays and fails the check at the end
      try {
        unlinkSync(join(cache.quarantineDir, req.hash.toString()));
        quarantined++;
      } catch {
        // none
      }
    }
  }

  await fuzzLoopAsync(
    t,
    cfg,
    'http',
    10_000,
    async (rng, _i, n) => {
      const lane = lanes[n]!;
      const started = performance.now();
      try {
        await oneCase(rng, lane);
      } finally {
        const key = lane.server.served.map((s) => s.kind).join(',') || 'none';
        const [count, ms] = kindMs.get(key) ?? [0, 0];
        kindMs.set(key, [count + 1, ms + performance.now() - started]);
      }
    },
    LANES,
  );

  t.comment(`outcomes: ${tally}`);
  t.comment(`${fetchCalls} Fetcher.fetch calls; ${committed} objects committed (and checked), ${quarantined} quarantined for a wrong size`);
  t.comment(
    'slowest answer sequences (cases, total ms): ' +
      [...kindMs].sort((a, b) => b[1][1] - a[1][1]).slice(0, 8).map(([k, [n, ms]]) => `${k} ${n} ${ms.toFixed(0)}`).join('; '),
  );
  for (const [n, lane] of lanes.entries()) {
    t.same(cachedObjects(lane.cache).map((f) => f.slice(lane.cache.dir.length)), [], `lane ${n}: no object left in the cache`);
    t.same(readdirSync(lane.cache.txnDir), [], `lane ${n}: txn/ is empty`);
    t.same(readdirSync(lane.cache.quarantineDir), [], `lane ${n}: quarantaine/ holds nothing of a right size`);
    t.equal(lane.fetcher.inflightCount, 0, `lane ${n}: nothing in flight`);
  }
});
