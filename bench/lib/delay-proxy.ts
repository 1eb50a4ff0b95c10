/**
 * A TCP proxy that adds latency, for network emulation without netem: every byte is forwarded
 * `rttMs / 2` after it arrived, in each direction, and a new connection's first bytes towards the
 * server wait one more round trip (the TCP handshake a real link would have cost). So a request on a
 * fresh connection gets its first response byte 2 × RTT after connect(), one on a kept-alive
 * connection 1 × RTT after it was sent — as over a link with that round-trip time. Bandwidth is
 * left to `tc tbf` on the link; TCP slow start over the long path is not emulated (the proxy
 * acknowledges at once), which favours long bulk transfers slightly.
 *
 * Run:  npx ts-node bench/lib/delay-proxy.ts --rtt-ms 20 --map 10.0.0.1:5000=127.0.0.1:5001 [--map …]
 *       (from code: spawn(...delayProxyArgv([...]))
 * It prints `ready` once it listens on every mapping and runs until SIGTERM/SIGINT.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface ProxyMapping {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly targetHost: string;
  readonly targetPort: number;
}

/** Queued bytes per direction at which the source is paused (well above bandwidth × delay). */
const HIGH_WATER = 8 << 20;

type Item = { due: number; chunk: Buffer | null };

/** Forwards src → dst with every chunk held until `delayMs` after arrival (and not before `notBefore`). */
function delayedPipe(src: net.Socket, dst: net.Socket, delayMs: number, notBefore: number): void {
  const queue: Item[] = [];
  let head = 0;
  let queued = 0;
  let timer: NodeJS.Timeout | undefined;
  const maybeResume = () => {
    if (src.isPaused() && queued + dst.writableLength < HIGH_WATER / 2) src.resume();
  };
  const flush = () => {
    timer = undefined;
    const now = performance.now();
    while (head < queue.length && queue[head]!.due <= now + 0.5) {
      const item = queue[head++]!;
      if (item.chunk === null) {
        dst.end();
      } else {
        queued -= item.chunk.length;
        if (!dst.destroyed) dst.write(item.chunk);
      }
    }
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    maybeResume();
    schedule();
  };
  const schedule = () => {
    if (timer || head >= queue.length) return;
    timer = setTimeout(flush, Math.max(0, queue[head]!.due - performance.now()));
  };
  const push = (chunk: Buffer | null) => {
    queue.push({ due: Math.max(performance.now() + delayMs, notBefore), chunk });
    if (chunk) {
      queued += chunk.length;
      if (queued + dst.writableLength > HIGH_WATER) src.pause();
    }
    schedule();
  };
  src.on('data', (c: Buffer) => push(c));
  src.on('end', () => push(null));
  dst.on('drain', maybeResume);
  const stop = () => {
    if (timer) clearTimeout(timer);
  };
  dst.on('close', stop);
}

export interface DelayProxy {
  readonly connections: () => number;
  close(): Promise<void>;
}

export async function startDelayProxy(mappings: readonly ProxyMapping[], rttMs: number): Promise<DelayProxy> {
  const oneWay = rttMs / 2;
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const servers: net.Server[] = [];
  for (const m of mappings) {
    const server = net.createServer({ noDelay: true, pauseOnConnect: false }, (client) => {
      connections++;
      const accepted = performance.now();
      const upstream = net.connect({ host: m.targetHost, port: m.targetPort, noDelay: true });
      sockets.add(client);
      sockets.add(upstream);
      const kill = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', kill);
      upstream.on('error', kill);
      // An orderly close (FIN) travels through the queue as end(); a reset or error kills both at once.
      client.on('close', (hadError) => {
        sockets.delete(client);
        if (hadError) kill();
      });
      upstream.on('close', (hadError) => {
        sockets.delete(upstream);
        if (hadError) kill();
      });
      delayedPipe(client, upstream, oneWay, accepted + rttMs + oneWay);
      delayedPipe(upstream, client, oneWay, 0);
    });
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(m.listenPort, m.listenHost, () => ok());
    });
    servers.push(server);
  }
  return {
    connections: () => connections,
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((ok) => s.close(() => ok()))));
    },
  };
}

export function parseMapping(spec: string): ProxyMapping {
  const m = /^([^:]+):(\d+)=([^:]+):(\d+)$/.exec(spec);
  if (!m) throw new Error(`bad --map ${spec} (LISTEN_HOST:PORT=TARGET_HOST:PORT)`);
  return { listenHost: m[1]!, listenPort: Number(m[2]), targetHost: m[3]!, targetPort: Number(m[4]) };
}

async function main(argv: readonly string[]): Promise<void> {
  const mappings: ProxyMapping[] = [];
  let rtt = 20;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--map') mappings.push(parseMapping(argv[++i] ?? ''));
    else if (argv[i] === '--rtt-ms') rtt = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (mappings.length === 0 || !(rtt >= 0)) throw new Error('usage: delay-proxy --rtt-ms MS --map HOST:PORT=HOST:PORT [...]');
  const proxy = await startDelayProxy(mappings, rtt);
  process.stdout.write(`ready rtt=${rtt}ms ${mappings.map((m) => `${m.listenHost}:${m.listenPort}→${m.targetHost}:${m.targetPort}`).join(' ')}\n`);
  const stop = () => void proxy.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/** The command line: prints `ready …`, runs until SIGTERM/SIGINT; a bad argument exits 1. */
export function delayProxyCli(argv: readonly string[]): void {
  main(argv).catch((e: Error) => {
    process.stderr.write(`delay-proxy: ${e.message}\n`);
    process.exit(1);
  });
}

/**
 * argv that runs the proxy with `node`: the file is required through ts-node's CommonJS hook, so
 * it also starts under a parent's ESM loader hooks (tap's, which child processes inherit).
 */
export function delayProxyArgv(args: readonly string[]): string[] {
  const code = `require('ts-node').register({ transpileOnly: true }); require(${JSON.stringify(__filename)}).delayProxyCli(process.argv.slice(1));`;
  return [process.execPath, '-e', code, '--', ...args];
}

if (require.main === module) delayProxyCli(process.argv.slice(2));
