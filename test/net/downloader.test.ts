import t, { type Test } from 'tap';
import type http from 'node:http';
import { Downloader, DownloadError, escapeUrl, normalizeProxy, type DownloaderOptions } from '../../src/net/downloader';
import { CvmfsError } from '../../src/errors';
import { deadUrl, startProxy, startServer, testOptions } from './servers';

const BODY = Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7) % 256));

function serveBody(body: Buffer = BODY): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
    res.end(body);
  };
}

function downloader(t: Test, o: DownloaderOptions): Downloader {
  const d = new Downloader(o);
  t.teardown(() => d.close());
  return d;
}

/** A sink collecting chunks, resettable like the fetcher's. */
function collector(): { sink: (c: Buffer) => void; reset: () => void; bytes: () => Buffer; restarts: number } {
  let chunks: Buffer[] = [];
  const c = {
    restarts: 0,
    sink: (chunk: Buffer) => void chunks.push(Buffer.from(chunk)),
    reset: () => {
      chunks = [];
      c.restarts++;
    },
    bytes: () => Buffer.concat(chunks),
  };
  return c;
}

async function rejects(t: Test, p: Promise<unknown>, code: string, pattern: RegExp, msg: string): Promise<unknown> {
  try {
    await p;
    t.fail(`${msg}: resolved`);
    return undefined;
  } catch (e) {
    t.equal(CvmfsError.is(e) ? e.code : `not a CvmfsError: ${String(e)}`, code, `${msg}: code`);
    t.match((e as Error).message, pattern, `${msg}: message`);
    return e;
  }
}

t.test('escapeUrl follows §1.1 and proxies get a scheme', async (t) => {
  t.equal(escapeUrl('http://h:80/a b/ñ?x=1#f'), 'http://h:80/a%20b/%C3%B1%3Fx%3D1%23f');
  t.equal(escapeUrl('http://[::1]:8/ok@+-_~,.'), 'http://[::1]:8/ok@+-_~,.');
  t.equal(escapeUrl('/100%'), '/100%25');
  t.equal(normalizeProxy('squid:3128'), 'http://squid:3128');
  t.equal(normalizeProxy('direct'), 'DIRECT');
  t.equal(normalizeProxy('http://p:1/'), 'http://p:1');
});

t.test('streams the body with CVMFS request headers over a keep-alive pool', async (t) => {
  const srv = await startServer(t, (req, res) => {
    // Several writes, so the sink sees several chunks.
    res.writeHead(200, { 'content-length': BODY.length });
    for (let i = 0; i < BODY.length; i += 16384) res.write(BODY.subarray(i, i + 16384));
    res.end();
  }, '/cvmfs/repo');
  const d = downloader(t, testOptions({ serverUrls: [srv.url] }));
  const c = collector();
  let calls = 0;
  const r = await d.fetch('data/ab/cdef', (chunk) => {
    calls++;
    c.sink(chunk);
  });
  t.same(c.bytes(), BODY, 'bytes arrive intact');
  t.ok(calls > 1, 'in several chunks, not one buffer');
  t.same(r, { host: srv.url, proxy: 'DIRECT', bytes: BODY.length });
  const h = srv.seen[0].headers;
  t.equal(srv.seen[0].url, '/cvmfs/repo/data/ab/cdef');
  t.equal(h.pragma, '', 'empty Pragma');
  t.notOk('cache-control' in h);
  t.match(h['user-agent'], /^cvmfs-ts\/\d+\.\d+\.\d+$/);
  t.equal(h.connection, 'keep-alive');

  await d.fetch('/data/ab/cdef', () => undefined, { noCache: true });
  t.equal(srv.seen[1].headers.pragma, 'no-cache');
  t.equal(srv.seen[1].headers['cache-control'], 'no-cache');
  for (let i = 0; i < 4; i++) await d.fetch('/data/ab/cdef', () => undefined);
  // undici frees a connection a moment after the body ends, so back-to-back requests may use two.
  t.ok(srv.connections() <= 2, `6 requests on ${srv.connections()} keep-alive connection(s)`);
  t.same(
    { downloads: d.counters.downloads, bytes: d.counters.bytes, failures: d.counters.failures },
    { downloads: 6, bytes: 6 * BODY.length, failures: 0 },
  );
  t.ok(d.counters.seconds > 0, 'transfer time is counted');
  t.equal(d.currentHost(), srv.url);
  t.equal(d.currentProxy(), 'DIRECT');
  t.same(d.hostList(), [srv.url]);
});

t.test('host failover: 500, connection refused and reset mid-body move to the next host', async (t) => {
  const bad500 = await startServer(t, (_req, res) => void res.writeHead(500, { 'content-length': '0' }).end());
  const reset = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-length': BODY.length });
    res.write(BODY.subarray(0, 30_000), () => setTimeout(() => res.socket?.destroy(), 20));
  });
  const good = await startServer(t, serveBody());
  const dead = await deadUrl();

  const d = downloader(t, testOptions({ serverUrls: [bad500.url, dead, reset.url, good.url] }));
  const c = collector();
  const r = await d.fetch('/x', c.sink, { onRestart: c.reset });
  t.equal(r.host, good.url, 'served by the last host');
  t.same(c.bytes(), BODY, 'the sink holds exactly the good body');
  t.equal(c.restarts, 2, 'restarted after each partial body (1 try + 1 retry on the resetting host)');
  t.equal(bad500.seen.length, 1, 'HTTP 500 is a host error: no same-path retry');
  t.equal(reset.seen.length, 2, 'a reset is a transfer error: retried once (maxRetries 1)');
  t.equal(d.counters.hostFailovers, 3);
  t.equal(d.counters.retries, 2, 'refused and reset were each retried once');
  t.equal(d.currentHost(), good.url, 'the global host moved along');

  await d.fetch('/y', () => undefined);
  t.equal(bad500.seen.length, 1, 'the next request starts at the current host');
  t.equal(good.seen.length, 2);
});

t.test('giving up: typed errors naming the URL and the last cause', async (t) => {
  const nf1 = await startServer(t, (_req, res) => void res.writeHead(404, { 'content-length': '0' }).end());
  const nf2 = await startServer(t, (_req, res) => void res.writeHead(404, { 'content-length': '0' }).end());
  const d = downloader(t, testOptions({ serverUrls: [nf1.url, nf2.url] }));
  const e = await rejects(t, d.fetch('/data/zz/missing', () => undefined), 'E_NOT_FOUND', /\/data\/zz\/missing.*HTTP 404/, '404 everywhere');
  t.ok(e instanceof DownloadError);
  t.equal((e as DownloadError).attempts, 2);
  t.equal(d.counters.failures, 1);

  const s500 = await startServer(t, (_req, res) => void res.writeHead(503, { 'content-length': '0' }).end());
  const d2 = downloader(t, testOptions({ serverUrls: [nf1.url, s500.url] }));
  await rejects(t, d2.fetch('/a', () => undefined), 'E_NETWORK', /HTTP 503/, 'mixed 404/503');
});

t.test('HTTP 429 is retried on the same host', async (t) => {
  let n = 0;
  const srv = await startServer(t, (req, res) => {
    if (n++ === 0) res.writeHead(429, { 'content-length': '0' }).end();
    else serveBody()(req, res);
  });
  const d = downloader(t, testOptions({ serverUrls: [srv.url] }));
  const c = collector();
  await d.fetch('/a', c.sink);
  t.same(c.bytes(), BODY);
  t.equal(srv.seen.length, 2);
  t.equal(d.counters.retries, 1);
  t.equal(d.counters.hostFailovers, 0);
});

t.test('low-speed rule: a trickling body fails after `timeout` seconds; headers time out too', async (t) => {
  const trickle = (chunks: number) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(200, { 'content-length': chunks * 16 });
    let i = 0;
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      res.write(Buffer.alloc(16, 1));
      if (++i === chunks) {
        clearInterval(timer);
        res.end();
      }
    }, 40);
  };
  const slow = await startServer(t, trickle(200));
  const d = downloader(t, testOptions({ serverUrls: [slow.url], timeoutDirectS: 0.3, maxRetries: 0, lowSpeedLimit: 1000 }));
  const started = Date.now();
  await rejects(t, d.fetch('/a', () => undefined), 'E_NETWORK', /slower than 1000 B\/s for 0\.3 s/, 'trickle');
  const elapsed = Date.now() - started;
  t.ok(elapsed < 1500, `gave up after ${elapsed} ms, not after the 8 s body`);

  // Same trickle without the rule: chunks keep coming faster than the idle timeout, so it completes.
  const short = await startServer(t, trickle(12));
  const relaxed = downloader(t, testOptions({ serverUrls: [short.url], timeoutDirectS: 0.3, maxRetries: 0, lowSpeedLimit: 0 }));
  t.equal((await relaxed.fetch('/a', () => undefined)).bytes, 12 * 16);

  const mute = await startServer(t, () => undefined); // never answers
  const d2 = downloader(t, testOptions({ serverUrls: [mute.url], timeoutDirectS: 0.2, maxRetries: 0 }));
  await rejects(t, d2.fetch('/a', () => undefined), 'E_NETWORK', /[Tt]imeout/, 'no headers');
});

t.test('redirects are host errors unless followed', async (t) => {
  const good = await startServer(t, serveBody());
  const redir = await startServer(t, (_req, res) => void res.writeHead(302, { location: `${good.url}/moved`, 'content-length': '0' }).end());
  const strict = downloader(t, testOptions({ serverUrls: [redir.url] }));
  await rejects(t, strict.fetch('/a', () => undefined), 'E_NETWORK', /302 redirect/, 'not followed');
  const lenient = downloader(t, testOptions({ serverUrls: [redir.url], followRedirects: true }));
  const c = collector();
  await lenient.fetch('/a', c.sink);
  t.same(c.bytes(), BODY);
  t.equal(good.seen[0].url, '/moved');
});

t.test('through a proxy: absolute-form GET with the server Host header, never CONNECT', async (t) => {
  const origin = await startServer(t, serveBody(), '/cvmfs/repo');
  const proxy = await startProxy(t);
  const d = downloader(t, testOptions({ serverUrls: [origin.url], proxyGroups: [[proxy.url]] }));
  const c = collector();
  const r = await d.fetch('/data/ab/cd ef', c.sink);
  t.same(c.bytes(), BODY);
  t.equal(r.proxy, proxy.url);
  t.equal(d.currentProxy(), proxy.url);
  t.equal(proxy.seen.length, 1);
  t.equal(proxy.seen[0].method, 'GET', 'not CONNECT');
  t.equal(proxy.seen[0].url, `http://127.0.0.1:${origin.port}/cvmfs/repo/data/ab/cd%20ef`, 'absolute URI, escaped');
  t.equal(proxy.seen[0].headers.host, `127.0.0.1:${origin.port}`, 'Host of the server, not of the proxy');
  t.equal(origin.seen[0].url, '/cvmfs/repo/data/ab/cd%20ef');
});

t.test('proxy failover: dead group → next group → DIRECT; squid errors burn the proxy, not the host', async (t) => {
  const origin = await startServer(t, serveBody());
  const dead = await deadUrl();
  const d = downloader(t, testOptions({ serverUrls: [origin.url], proxyGroups: [[dead], ['DIRECT']] }));
  const c = collector();
  const r = await d.fetch('/a', c.sink);
  t.same(c.bytes(), BODY);
  t.equal(r.proxy, 'DIRECT');
  t.equal(d.currentProxy(), 'DIRECT', 'the global proxy moved to the DIRECT group');
  t.equal(d.counters.proxyFailovers, 1);
  t.equal(d.counters.hostFailovers, 0);

  const squid = await startProxy(t, (_req, res) => {
    res.writeHead(503, { 'x-squid-error': 'ERR_CONNECT_FAIL 111', 'content-length': '0' }).end();
    return true;
  });
  const good = await startProxy(t);
  const d2 = downloader(t, testOptions({ serverUrls: [origin.url], proxyGroups: [[squid.url], [good.url]] }));
  const r2 = await d2.fetch('/a', () => undefined);
  t.equal(r2.proxy, good.url);
  t.equal(squid.seen.length, 1, 'a proxy error is not retried on the same path');
  t.equal(d2.counters.hostFailovers, 0);

  // All proxies dead for every host: a host failure per host, then a typed error.
  const d3 = downloader(t, testOptions({ serverUrls: [origin.url], proxyGroups: [[dead]], maxRetries: 0 }));
  await rejects(t, d3.fetch('/a', () => undefined), 'E_NETWORK', /ECONNREFUSED|connect/i, 'no proxy works');
  t.equal(origin.seen.length, 2, 'the origin saw only the two successful requests');
});

t.test('ranges: Range header, or cut out of a 200 from a server that ignores it', async (t) => {
  const ranged = await startServer(t, (req, res) => {
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) return serveBody()(req, res);
    const [s, e] = [Number(m[1]), Number(m[2])];
    res.writeHead(206, { 'content-range': `bytes ${s}-${e}/${BODY.length}`, 'content-length': e - s + 1 });
    res.end(BODY.subarray(s, e + 1));
  });
  const plain = await startServer(t, serveBody());
  for (const srv of [ranged, plain]) {
    const d = downloader(t, testOptions({ serverUrls: [srv.url] }));
    const c = collector();
    const r = await d.fetch('/f', c.sink, { range: { offset: 1000, size: 5000 } });
    t.same(c.bytes(), BODY.subarray(1000, 6000), srv === ranged ? '206' : '200 sliced');
    t.equal(r.bytes, 5000);
    t.equal(srv.seen[0].headers.range, 'bytes=1000-5999');
  }
});

t.test('baseUrls replace the server ring (external data)', async (t) => {
  const origin = await startServer(t, serveBody());
  const ext = await startServer(t, serveBody(Buffer.from('external')));
  const d = downloader(t, testOptions({ serverUrls: [origin.url] }));
  const c = collector();
  const r = await d.fetch('/some dir/file', c.sink, { baseUrls: [await deadUrl(), ext.url + '/'] });
  t.equal(c.bytes().toString(), 'external');
  t.equal(r.host, ext.url);
  t.equal(ext.seen[0].url, '/some%20dir/file');
  t.equal(origin.seen.length, 0);
  t.equal(d.currentHost(), origin.url, 'the server ring is untouched');
});

t.test('sink errors and aborts end the download at once', async (t) => {
  const srv = await startServer(t, serveBody());
  const d = downloader(t, testOptions({ serverUrls: [srv.url, srv.url] }));
  const boom = new Error('disk full');
  await t.rejects(
    d.fetch('/a', () => {
      throw boom;
    }),
    boom,
    'the sink error, unchanged',
  );
  t.equal(srv.seen.length, 1, 'no retry, no failover');

  const mute = await startServer(t, () => undefined);
  const d2 = downloader(t, testOptions({ serverUrls: [mute.url] }));
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('interrupted')), 50);
  await t.rejects(d2.fetch('/a', () => undefined, { signal: ac.signal }), { message: 'interrupted' });

  // A partial body can only be retried when the caller can restart its sink.
  const reset = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-length': 1000 });
    res.write(Buffer.alloc(100), () => res.socket?.destroy());
  });
  const d3 = downloader(t, testOptions({ serverUrls: [reset.url] }));
  await rejects(t, d3.fetch('/a', () => undefined), 'E_NETWORK', /cannot restart/, 'no onRestart');
  t.equal(reset.seen.length, 1);
});

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('reset timers: back to proxy group 0 after proxyResetAfterS (0 = never)', async (t) => {
  const origin = await startServer(t, serveBody());
  let down = true;
  const primary = await startProxy(t, (_req, res) => {
    if (!down) return false;
    res.writeHead(502, { 'x-squid-error': 'ERR_CONNECT_FAIL 111', 'content-length': '0' }).end();
    return true;
  });
  const backup = await startProxy(t);
  const groups = [[primary.url], [backup.url]];
  const d = downloader(t, testOptions({ serverUrls: [origin.url], proxyGroups: groups, proxyResetAfterS: 0.3 }));
  const never = downloader(t, testOptions({ serverUrls: [origin.url], proxyGroups: groups, proxyResetAfterS: 0 }));
  t.equal((await d.fetch('/a', () => undefined)).proxy, backup.url, 'the dead primary group fails over');
  t.equal((await never.fetch('/a', () => undefined)).proxy, backup.url);
  t.equal(primary.seen.length, 2);
  down = false;
  t.equal((await d.fetch('/b', () => undefined)).proxy, backup.url, 'before the reset time: still the backup group');
  t.equal(primary.seen.length, 2, 'the primary is not asked');
  await pause(450);
  t.equal((await d.fetch('/c', () => undefined)).proxy, primary.url, 'after it: group 0 again');
  t.equal(d.currentProxy(), primary.url);
  t.equal((await never.fetch('/c', () => undefined)).proxy, backup.url, 'proxyResetAfterS 0: no reset');
});

t.test('reset timers: back to host 0 after hostResetAfterS, timed from the first switch', async (t) => {
  let failing = true;
  const first = await startServer(t, (req, res) => {
    if (failing) res.writeHead(503, { 'content-length': '0' }).end();
    else serveBody()(req, res);
  });
  const second = await startServer(t, serveBody());
  const d = downloader(t, testOptions({ serverUrls: [first.url, second.url], hostResetAfterS: 0.4 }));
  t.equal((await d.fetch('/a', () => undefined)).host, second.url);
  t.equal(d.currentHost(), second.url);
  failing = false;
  await pause(200);
  t.equal((await d.fetch('/b', () => undefined)).host, second.url, 'before the reset time: the second host');
  t.equal(first.seen.length, 1);
  await pause(300);
  t.equal(d.currentHost(), second.url, 'the reset happens at the start of a request');
  t.equal((await d.fetch('/c', () => undefined)).host, first.url, 'after it: host 0 again');
  t.equal(d.currentHost(), first.url);
  t.equal(first.seen.length, 2);
});

t.test('bad data (verify): once more with no-cache on the same path, then the next host', async (t) => {
  const damaged = Buffer.from(BODY);
  damaged[500] ^= 1;
  const bad = await startServer(t, serveBody(damaged));
  const good = await startServer(t, serveBody());
  const d = downloader(t, testOptions({ serverUrls: [bad.url, good.url] }));
  const c = collector();
  const verify = () => c.bytes().equals(BODY);
  const r = await d.fetch('/a', c.sink, { onRestart: c.reset, verify });
  t.equal(r.host, good.url);
  t.same(c.bytes(), BODY);
  t.equal(c.restarts, 2, 'the sink restarted after each rejected body');
  t.same(bad.seen.map((s) => s.headers.pragma), ['', 'no-cache'], 'the same host again, with no-cache');
  t.equal(good.seen[0].headers['cache-control'], 'no-cache', 'the request stays no-cache');
  t.equal(d.currentHost(), good.url, 'bad data twice is a host error');

  // A damaged copy in a proxy: the no-cache request through the same proxy heals it, no failover.
  const origin = await startServer(t, serveBody());
  const proxy = await startProxy(t, (req, res) => {
    if (req.headers.pragma === 'no-cache') return false;
    res.writeHead(200, { 'content-length': damaged.length }).end(damaged);
    return true;
  });
  const d2 = downloader(t, testOptions({ serverUrls: [origin.url, good.url], proxyGroups: [[proxy.url]] }));
  const c2 = collector();
  const r2 = await d2.fetch('/a', c2.sink, { onRestart: c2.reset, verify: () => c2.bytes().equals(BODY) });
  t.same([r2.host, r2.proxy], [origin.url, proxy.url]);
  t.same(c2.bytes(), BODY);
  t.equal(d2.counters.hostFailovers + d2.counters.proxyFailovers, 0);

  // Bad everywhere: a typed error that says so.
  const d3 = downloader(t, testOptions({ serverUrls: [bad.url] }));
  const c3 = collector();
  const e = await rejects(t, d3.fetch('/a', c3.sink, { onRestart: c3.reset, verify: () => false }), 'E_NETWORK', /bad data/, 'bad everywhere');
  t.equal((e as DownloadError).badData, true);
  t.equal((e as DownloadError).attempts, 2);
  // An error thrown by verify is the caller's: it ends the download unchanged.
  const boom = new Error('verify broke');
  await t.rejects(
    d3.fetch('/a', () => undefined, {
      verify: () => {
        throw boom;
      },
    }),
    boom,
  );
});

t.test('timeouts are exact: hosts that never answer cost (retries + 1) × timeout each', async (t) => {
  const mute1 = await startServer(t, () => undefined);
  const mute2 = await startServer(t, () => undefined);
  const d = downloader(t, testOptions({ serverUrls: [mute1.url, mute2.url], timeoutDirectS: 1, maxRetries: 1, backoffInitS: 0, backoffMaxS: 0 }));
  const started = performance.now();
  await rejects(t, d.fetch('/a', () => undefined), 'E_NETWORK', /timeout \(no response within 1 s\)/, 'mute hosts');
  const elapsed = (performance.now() - started) / 1000;
  t.same([mute1.seen.length, mute2.seen.length], [2, 2], 'two attempts per host');
  t.ok(elapsed >= 3.9 && elapsed < 4.6, `4 attempts × 1 s took ${elapsed.toFixed(2)} s`);
});
