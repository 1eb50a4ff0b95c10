/**
 * The commands of a mount's control socket (talk.ts), answered as cvmfs's talk thread answers them
 * (`cvmfs/talk.cc`, §5.15) where we know its text: `cache size|list [pinned|catalogs]`, `cleanup MB`,
 * `evict PATH`, `pin PATH`, `remount [sync]`, `revision`, `host info|switch|set URLS`,
 * `proxy info|set PROXIES`, `timeout info|set PROXY DIRECT`, `open catalogs`, `mountpoint`, `pid`,
 * `version`, `parameters`, `reset error counters`; anything else is `unknown command`. Ours, for thin
 * images (prefetch.ts): `prefetch profile PATH`, `prefetch catalogs PATH…`, `prefetch status`,
 * `record start`, `record stop`.
 *
 * Deviations: `cache size` adds the limit and the object count, and `cache list` prints the lines of
 * `cvmfs-ts cache list` (hash, size, kind, pins, description), where cvmfs prints descriptions only.
 * `remount` and `remount sync` both wait until the check is done and a newer revision serves (there
 * is no drain-out phase to wait for: the kernel's caches expire by themselves). `pin` downloads what
 * is not cached, then pins it persistently (`cvmfs-ts cache unpin` undoes it).
 */
import type { QuotaManager } from '../cache/quota';
import { formatCacheSize, formatQuotaEntry } from '../cache/quota-report';
import { substituteTemplates } from '../config/bash-config';
import { parseProxyList } from '../config/parameters';
import type { ProxyGroup } from '../config/settings';
import { CvmfsError, describeError } from '../errors';
import type { AttachedCatalog } from './catalog-tree';
import type { FetchRequest, ObjectFetcher } from './object-fetcher';
import type { MountedRevision } from './revision';
import { UNKNOWN_COMMAND } from './talk';
import type { Prefetcher } from './prefetch';

const MB = 1024 * 1024;

/** The download manager's run-time controls (implemented by Downloader). */
export interface NetworkControl {
  hostList(): readonly string[];
  currentHostIndex(): number;
  switchHost(): void;
  setHosts(urls: readonly string[]): void;
  proxyGroupList(): readonly (readonly string[])[];
  currentProxyGroupIndex(): number;
  currentProxy(): string;
  setProxies(groups: readonly (readonly string[])[]): void;
  timeouts(): { proxyS: number; directS: number };
  setTimeouts(proxyS: number, directS: number): void;
}

/** What the commands act on; the mount's composition root provides it. */
export interface MountControlParts {
  readonly fqrn: string;
  readonly mountpoint: string;
  readonly pid: number;
  readonly version: string;
  readonly network: NetworkControl;
  readonly quota: QuotaManager;
  /** CVMFS_QUOTA_LIMIT in bytes (0 = unmanaged). */
  readonly limitBytes: number;
  readonly revisions: {
    readonly mounted: MountedRevision;
    checkNow(): Promise<'updated' | 'current' | 'failed'>;
  };
  /** False with a fixed root hash (CVMFS_ROOT_HASH): there is nothing to check. */
  readonly updatable: boolean;
  readonly filesystem: {
    objectRequests(path: string): Promise<FetchRequest[]>;
    resetErrorCounters(): void;
  };
  readonly fetcher: ObjectFetcher;
  /** The effective parameters, `NAME=value    # from <file>` per line. */
  parameters(): string;
  /** Access recording and prefetch (thin images); without it those commands are unknown. */
  readonly prefetch?: Pick<Prefetcher, 'profile' | 'catalogs' | 'status' | 'recordStart' | 'recordStop'>;
}

interface Command {
  /** The words that name it; the rest of the line is its argument. */
  readonly name: string;
  /** Usage of the argument; undefined = the command takes none. */
  readonly args?: string;
  run(arg: string): string | Promise<string>;
}

export class MountControl {
  private readonly commands: readonly Command[];

  constructor(private readonly p: MountControlParts) {
    this.commands = [
      { name: 'cache size', run: () => this.ifManaged('report its size', () => formatCacheSize(p.quota.usage(), p.limitBytes)) },
      { name: 'cache list', run: () => this.list({}) },
      { name: 'cache list pinned', run: () => this.list({ pinnedOnly: true }) },
      { name: 'cache list catalogs', run: () => this.list({ kind: 'catalog' }) },
      { name: 'cleanup', args: '<MB>', run: (mb) => this.cleanup(mb) },
      { name: 'evict', args: '<path>', run: (path) => this.evict(path) },
      { name: 'pin', args: '<path>', run: (path) => this.pin(path) },
      { name: 'remount', run: () => this.remount() },
      { name: 'remount sync', run: () => this.remount() },
      { name: 'revision', run: () => `${p.revisions.mounted.revision}\n` },
      { name: 'host info', run: () => this.hostInfo() },
      { name: 'host switch', run: () => (p.network.switchHost(), 'OK\n') },
      { name: 'host set', args: '<host list>', run: (urls) => this.setHosts(urls) },
      { name: 'proxy info', run: () => this.proxyInfo() },
      { name: 'proxy set', args: '<proxy list>', run: (proxies) => this.setProxies(proxies) },
      { name: 'timeout info', run: () => this.timeoutInfo() },
      { name: 'timeout set', args: '<proxy> <direct>', run: (t) => this.setTimeouts(t) },
      { name: 'open catalogs', run: () => this.openCatalogs() },
      { name: 'mountpoint', run: () => `${p.mountpoint}\n` },
      { name: 'pid', run: () => `${p.pid}\n` },
      { name: 'version', run: () => `${p.version} (cvmfs-ts)\n` },
      { name: 'parameters', run: () => p.parameters() },
      { name: 'reset error counters', run: () => (p.filesystem.resetErrorCounters(), 'OK\n') },
      ...this.prefetchCommands(),
    ];
  }

  private prefetchCommands(): Command[] {
    const prefetch = this.p.prefetch;
    if (!prefetch) return [];
    return [
      { name: 'prefetch profile', args: '<path>', run: (path) => prefetch.profile(path) },
      { name: 'prefetch catalogs', args: '<path> [<path> ...]', run: (paths) => prefetch.catalogs(paths.split(/\s+/).filter((x) => x !== '')) },
      { name: 'prefetch status', run: () => prefetch.status() },
      { name: 'record start', run: () => prefetch.recordStart() },
      { name: 'record stop', run: () => prefetch.recordStop() },
    ];
  }

  /** The answer to one command line. */
  async answer(line: string): Promise<string> {
    const text = line.trim();
    const words = text.split(/\s+/);
    // The command with the most leading words in common wins ("cache list pinned" over "cache list").
    for (let n = Math.min(words.length, 3); n > 0; n--) {
      const name = words.slice(0, n).join(' ');
      const command = this.commands.find((c) => c.name === name);
      if (!command) continue;
      const arg = text.replace(new RegExp(`^(?:\\S+(?:\\s+|$)){${n}}`), ''); // as typed: paths may hold spaces
      if (command.args === undefined) return arg === '' ? command.run('') : UNKNOWN_COMMAND;
      return arg === '' ? `Usage: ${command.name} ${command.args}\n` : command.run(arg);
    }
    return UNKNOWN_COMMAND;
  }

  private ifManaged(what: string, answer: () => string | Promise<string>): string | Promise<string> {
    return this.p.quota.managed ? answer() : `Cache cannot ${what} (CVMFS_QUOTA_LIMIT is not set)\n`;
  }

  private list(o: { pinnedOnly?: boolean; kind?: 'catalog' }): string | Promise<string> {
    return this.ifManaged('list its entries', () => this.p.quota.list(o).map((e) => formatQuotaEntry(e) + '\n').join(''));
  }

  private cleanup(mb: string): string | Promise<string> {
    if (!/^\d+$/.test(mb)) return 'Usage: cleanup <MB>\n';
    return this.ifManaged('trigger eviction', async () =>
      (await this.p.quota.cleanup(Number(mb) * MB)) ? 'OK\n' : 'Not fully cleaned (there might be pinned chunks)\n',
    );
  }

  /** The objects of a regular file, or undefined when `path` names none. */
  private async objectsOf(path: string): Promise<FetchRequest[] | undefined> {
    try {
      return await this.p.filesystem.objectRequests('/' + path.replace(/^\/+|\/+$/g, ''));
    } catch (e) {
      if (CvmfsError.is(e, 'E_NOT_FOUND') || CvmfsError.is(e, 'E_USAGE')) return undefined;
      throw e;
    }
  }

  private async evict(path: string): Promise<string> {
    const objects = await this.objectsOf(path);
    if (!objects) return 'No such regular file\n';
    return this.ifManaged('evict', async () => {
      let pinned = 0;
      for (const o of objects) if ((await this.p.quota.remove(o.hash)) === 'pinned') pinned++;
      return pinned === 0 ? 'OK\n' : `Not fully evicted (${pinned} of ${objects.length} object(s) pinned or in use)\n`;
    });
  }

  private async pin(path: string): Promise<string> {
    const objects = await this.objectsOf(path);
    if (!objects) return 'No such regular file or pinning failed\n';
    try {
      for (const o of objects) {
        await this.p.fetcher.fetch(o);
        // Unmanaged caches never evict: what is fetched stays, pinned or not.
        if (this.p.quota.managed && !this.p.quota.setPersistentPin(o.hash, true)) throw new Error(`${o.hash} left the cache`);
      }
    } catch (e) {
      return `No such regular file or pinning failed (${describeError(e)})\n`;
    }
    return 'OK\n';
  }

  private async remount(): Promise<string> {
    if (!this.p.updatable) return 'Catalog up to date (fixed root catalog)\n';
    switch (await this.p.revisions.checkNow()) {
      case 'updated':
        return 'New revision applied\n';
      case 'current':
        return 'Catalog up to date\n';
      case 'failed':
        return 'Failed\n';
    }
  }

  private hostInfo(): string {
    const hosts = this.p.network.hostList();
    if (hosts.length === 0) return 'No hosts defined\n';
    const active = this.p.network.currentHostIndex();
    // No RTT probing (`host probe`) here: every host is "unprobed", as in cvmfs before a probe.
    return hosts.map((h, i) => `  [${i}] ${h} (unprobed)\n`).join('') + `Active host ${active}: ${hosts[active]}\n`;
  }

  private setHosts(text: string): string {
    const urls = text
      .split(';')
      .map((u) => substituteTemplates(u.trim(), this.p.fqrn))
      .filter((u) => u !== '');
    const bad = urls.find((u) => !/^https?:\/\//i.test(u) || !URL.canParse(u));
    if (bad !== undefined || urls.length === 0) return `Failed, not an http(s) URL: '${bad ?? text}'\n`;
    this.p.network.setHosts(urls);
    return 'OK\n';
  }

  private proxyInfo(): string {
    const groups = this.p.network.proxyGroupList();
    if (groups.length === 0) return 'No proxies defined\n';
    return (
      'Load-balance groups:\n' +
      groups.map((g, i) => `[${i}] ${g.join(', ')}\n`).join('') +
      `Active proxy: [${this.p.network.currentProxyGroupIndex()}] ${this.p.network.currentProxy()}\n`
    );
  }

  private setProxies(text: string): string {
    let groups: ProxyGroup[];
    try {
      groups = parseProxyList(text);
    } catch (e) {
      return `Failed, no valid proxies (${describeError(e)})\n`;
    }
    if (groups.length === 0) return 'Failed, no valid proxies\n';
    this.p.network.setProxies(groups);
    return 'OK\n';
  }

  private timeoutInfo(): string {
    const t = this.p.network.timeouts();
    return `Timeout with proxy: ${t.proxyS}s\nTimeout without proxy: ${t.directS}s\n`;
  }

  private setTimeouts(text: string): string {
    const m = /^(\d+) (\d+)$/.exec(text);
    if (!m || Number(m[1]) === 0 || Number(m[2]) === 0) return 'Usage: timeout set <proxy> <direct> (seconds, > 0)\n';
    this.p.network.setTimeouts(Number(m[1]), Number(m[2]));
    return 'OK\n';
  }

  /** The attached catalogs as a tree, as cvmfs's PrintHierarchy (4 spaces per level). */
  private openCatalogs(): string {
    const all = this.p.revisions.mounted.tree.catalogs();
    const print = (c: AttachedCatalog, level: number): string =>
      `${'    '.repeat(level)}-> ${c.mountPath || '/'}\n` +
      all
        .filter((child) => child.parent === c)
        .map((child) => print(child, level + 1))
        .join('');
    return print(this.p.revisions.mounted.tree.root, 0);
  }
}
