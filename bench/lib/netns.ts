/**
 * An emulated network link for benchmarks: two network namespaces (server and client) joined by a
 * veth pair, each end shaped with `tc tbf` to `rateMbit`. Latency is added by a delaying TCP proxy
 * (bench/lib/delay-proxy.ts; this kernel has no netem) that servers in the server namespace sit
 * behind.
 *
 *   const link = await createLink({ prefix: 'cvb', subnet: '10.213.7', rateMbit: 100 });
 *   spawn(...link.enter('server'), 'docker-registry', ...)   // `nsenter --net=… --` prefix
 *   const before = await link.counters();                     // bytes over the veth
 *   await link.remove();
 *
 * Processes join a namespace with `nsenter --net` only, not `ip netns exec`: the latter also
 * unshares the mount namespace, so a FUSE or overlay mount made inside would be invisible to
 * containerd outside. Mounts live in the mount namespace, which stays shared.
 */
import { existsSync } from 'node:fs';
import { run } from './proc';

export interface LinkOptions {
  /** Names: PREFIX-server / PREFIX-client namespaces, PREFIX-s / PREFIX-c veth ends. */
  readonly prefix: string;
  /** First three octets of a /24 not in use; the server is .1, the client .2. */
  readonly subnet: string;
  readonly rateMbit: number;
}

export interface LinkEnd {
  readonly ns: string;
  readonly dev: string;
  readonly ip: string;
}

export interface LinkCounters {
  /** Bytes the server end sent (server → client). */
  readonly down: number;
  /** Bytes the server end received (client → server). */
  readonly up: number;
}

export interface EmulatedLink {
  readonly server: LinkEnd;
  readonly client: LinkEnd;
  readonly rateMbit: number;
  /** argv prefix that runs a command in `side`'s network namespace. */
  enter(side: 'server' | 'client'): string[];
  counters(): Promise<LinkCounters>;
  remove(): Promise<void>;
}

export function nsPath(ns: string): string {
  return `/run/netns/${ns}`;
}

/** tbf parameters for `rateMbit`: a burst of at least 4 ms at rate (and ≥ 64 KiB so that GSO packets pass). */
export function tbfArgs(rateMbit: number): string[] {
  const bytesPerSecond = (rateMbit * 1e6) / 8;
  const burst = Math.max(64 * 1024, Math.ceil(bytesPerSecond * 0.004));
  return ['tbf', 'rate', `${rateMbit}mbit`, 'burst', String(burst), 'latency', '50ms'];
}

/** Removes namespaces and veths named by `prefix` (left over by a killed run); quiet when there are none. */
export async function removeLinkByPrefix(prefix: string): Promise<void> {
  for (const side of ['server', 'client']) {
    const ns = `${prefix}-${side}`;
    if (existsSync(nsPath(ns))) await run(['ip', 'netns', 'delete', ns], { allowFail: true });
  }
  // A veth end left in the root namespace (a failure half-way through creation).
  for (const dev of [`${prefix}-s`, `${prefix}-c`]) await run(['ip', 'link', 'delete', dev], { allowFail: true });
}

export async function createLink(o: LinkOptions): Promise<EmulatedLink> {
  await removeLinkByPrefix(o.prefix);
  const server: LinkEnd = { ns: `${o.prefix}-server`, dev: `${o.prefix}-s`, ip: `${o.subnet}.1` };
  const client: LinkEnd = { ns: `${o.prefix}-client`, dev: `${o.prefix}-c`, ip: `${o.subnet}.2` };
  const ip = (...args: string[]) => run(['ip', ...args]);
  try {
    await ip('netns', 'add', server.ns);
    await ip('netns', 'add', client.ns);
    await ip('link', 'add', server.dev, 'type', 'veth', 'peer', 'name', client.dev);
    for (const end of [server, client]) {
      await ip('link', 'set', end.dev, 'netns', end.ns);
      await ip('-n', end.ns, 'addr', 'add', `${end.ip}/24`, 'dev', end.dev);
      await ip('-n', end.ns, 'link', 'set', end.dev, 'up');
      await ip('-n', end.ns, 'link', 'set', 'lo', 'up');
      await run(['tc', '-n', end.ns, 'qdisc', 'add', 'dev', end.dev, 'root', ...tbfArgs(o.rateMbit)]);
    }
  } catch (e) {
    await removeLinkByPrefix(o.prefix);
    throw e;
  }
  return {
    server,
    client,
    rateMbit: o.rateMbit,
    enter: (side) => ['nsenter', `--net=${nsPath(side === 'server' ? server.ns : client.ns)}`, '--'],
    async counters() {
      const out = await run(['ip', '-n', server.ns, '-s', '-j', 'link', 'show', 'dev', server.dev]);
      const stats = (JSON.parse(out.stdout) as Array<{ stats64: { rx: { bytes: number }; tx: { bytes: number } } }>)[0]!.stats64;
      return { down: stats.tx.bytes, up: stats.rx.bytes };
    },
    remove: () => removeLinkByPrefix(o.prefix),
  };
}
