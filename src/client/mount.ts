/**
 * The composition root of one mount: configuration → keys → cache → downloader → fetcher →
 * verified root catalog → catalog tree → file system → FUSE. Built in that order, torn down in
 * reverse.
 */
import { loadConfig, type LoadedConfig } from '../config/bash-config';
import { parseSettings } from '../config/parameters';
import type { ClientSettings } from '../config/settings';
import { loadPublicKeys } from '../publish/keys';
import { DiskCache } from '../cache/disk-cache';
import { Downloader } from '../net/downloader';
import { Fetcher } from '../fetch/fetcher';
import { CatalogDb } from '../catalog/catalog-db';
import { Filesystem, catalogPath } from './filesystem';
import { AccessRecorder, Prefetcher } from './prefetch';
import { bootstrap, type BootstrapResult, type BootstrapSources } from './bootstrap';
import { loadRevision, RevisionUpdater } from './revision';
import type { MountStatus } from './magic-xattrs';
import type { ContentHash } from '../format/hash';
import { FuseAdapter } from '../fuse/adapter';
import type { ConfigurableLogger } from './log';
import { MountInstrumentation } from './instrumentation';
import { VERSION } from '../version';
import { MountControl } from './control';
import { TalkServer, talkSocketPath } from './talk';
import { formatShowConfig } from '../config/showconfig';
import { describeError } from '../errors';

/** Old catalogs stay open this long after a revision switch, for lookups already under way. */
const CLOSE_OLD_CATALOGS_AFTER_MS = 30_000;

export interface MountOptions {
  fqrn: string;
  mountpoint: string;
  configRoot?: string;
  overrides?: Record<string, string>;
  /** Configured here from CVMFS_SYSLOG_LEVEL and CVMFS_DEBUGLOG. */
  log: ConfigurableLogger;
}

export class Mount {
  private constructor(
    readonly settings: ClientSettings,
    readonly config: LoadedConfig,
    readonly revisions: RevisionUpdater,
    readonly filesystem: Filesystem,
    private readonly fuse: FuseAdapter,
    private readonly downloader: Downloader,
    private readonly externalDownloader: Downloader | undefined,
    private readonly cache: DiskCache,
    private readonly talk: TalkServer | undefined,
    private readonly prefetcher: Prefetcher,
  ) {}

  /** Logs and metrics (set by create: the constructor's list is long enough). */
  private instrumentation: MountInstrumentation | undefined;

  static async create(o: MountOptions): Promise<Mount> {
    const config = await loadConfig(o.fqrn, { root: o.configRoot, overrides: o.overrides });
    const settings = parseSettings(config);
    const instrumentation = MountInstrumentation.create({ fqrn: o.fqrn, mountpoint: o.mountpoint, settings, log: o.log });
    const masterKeys = await loadPublicKeys(settings.publicKeyFiles);
    const cache = await DiskCache.open(settings.cacheDir, { quotaLimitMb: settings.quotaLimitMb, log: (level, m) => o.log[level](m) });
    const downloader = new Downloader({ ...settings, userAgent: `cvmfs-ts/${VERSION}`, observer: instrumentation.downloads, connections: settings.parallelDownloads });
    // External files come from their own hosts, through their own proxies (DIRECT by default), with
    // their own timeouts: a second download manager, as the real client's (§5.12, §7.1).
    const externalDownloader =
      settings.externalUrls.length > 0
        ? new Downloader({
            ...settings,
            serverUrls: settings.externalUrls,
            proxyGroups: settings.externalProxyGroups,
            timeoutS: settings.externalTimeoutS,
            timeoutDirectS: settings.externalTimeoutDirectS,
            userAgent: `cvmfs-ts/${VERSION}`,
            observer: instrumentation.downloads,
            connections: settings.parallelDownloads,
          })
        : undefined;
    const fetcher = new Fetcher(cache, downloader, { externalUrls: settings.externalUrls, externalDownloader, parallelDownloads: settings.parallelDownloads });
    const recorder = new AccessRecorder(fetcher);
    const startedAt = new Date();
    try {
      await instrumentation.listen(); // before the FUSE mount: binding must not look up paths through it
      const bootSources: BootstrapSources = {
        getRaw: (path) => fetcher.getRaw(path, { noCache: true }),
        fetchObject: (hash, suffix, description) => fetcher.fetch({ hash, suffix, compressed: true, description }),
        readBreadcrumb: () => cache.readBreadcrumb(o.fqrn),
        isCached: (hash) => cache.has(hash),
      };
      const boot = await bootstrap({ fqrn: o.fqrn, masterKeys, fixedRootHash: settings.rootHash }, bootSources);
      if (boot.offline) o.log.warn(`servers unreachable: mounting revision cached in ${settings.cacheDir} (offline mode)`);
      const loadCatalog = async (hash: ContentHash, mountPath: string, size: number) => {
        o.log.debug(`loading catalog ${mountPath || '/'} (${hash})`);
        const path = await fetcher.fetch({
          hash,
          suffix: 'C',
          compressed: true,
          size: size > 0 ? size : undefined,
          description: `catalog ${mountPath || '/'}`,
          pin: true, // attached catalogs stay pinned in the cache quota; unpinned when closed
        });
        return new CatalogDb(path);
      };
      const revisionSource = { load: loadCatalog, maxTtlMinutes: settings.maxTtlMinutes };
      const first = await loadRevision(boot, revisionSource);
      const rememberRevision = async (b: BootstrapResult) => {
        if (b.offline || b.fixed || !b.manifest) return;
        await cache.writeBreadcrumb(o.fqrn, {
          rootHash: b.rootHash,
          timestamp: b.manifest.publishTimestamp ?? 0,
          revision: b.manifest.revision,
        });
      };
      await rememberRevision(boot);
      let filesystem: Filesystem | undefined;
      const updater = new RevisionUpdater(first, {
        ...revisionSource,
        log: o.log,
        check: async () => {
          const b = await bootstrap({ fqrn: o.fqrn, masterKeys }, bootSources);
          await rememberRevision(b);
          return b;
        },
        apply: async (next, previous) => {
          filesystem!.setTree(next.tree);
          // Lookups already under way may still use the old catalogs for a moment.
          setTimeout(() => previous.tree.catalogs().forEach((c) => (c.db.close(), cache.quota.unpin(c.hash))), CLOSE_OLD_CATALOGS_AFTER_MS).unref();
        },
      });
      const tree = () => updater.mounted.tree;
      const counters = fetcher.counters;
      let talk: TalkServer | undefined;
      const status: MountStatus = {
        fqrn: o.fqrn,
        version: VERSION,
        pid: process.pid,
        startedAt,
        revision: () => updater.mounted.revision,
        rootHash: () => updater.mounted.rootHash,
        expiresAt: () => (boot.fixed ? undefined : updater.expiresAt),
        host: () => downloader.currentHost(),
        hostList: () => downloader.hostList(),
        proxy: () => downloader.currentProxy(),
        loadedCatalogs: () => tree().loadedCount,
        downloads: () => downloader.counters.downloads,
        bytesDownloaded: () => downloader.counters.bytes,
        downloadSeconds: () => downloader.counters.seconds ?? 0,
        cacheHits: () => counters.hits,
        cacheMisses: () => counters.misses,
        openCalls: () => filesystem?.counters.open ?? 0,
        dirOpenCalls: () => filesystem?.counters.opendir ?? 0,
        ioErrors: () => filesystem?.counters.ioErrors ?? 0,
        timeouts: () => ({ proxy: downloader.timeouts().proxyS, direct: downloader.timeouts().directS }),
        externalHost: () => settings.externalUrls[0] ?? '',
        cachedPath: async (hash) => ((await cache.has(hash)) ? cache.pathOf(hash) : undefined),
        chunks: (r) => tree().chunks(r),
        talkSocket: () => talk?.path ?? '',
      };
      const downloaders = externalDownloader ? [downloader, externalDownloader] : [downloader];
      instrumentation.watch({ ...status, fetcher: counters, quota: cache.quota, downloaders, background: fetcher.background, downloadSlots: () => fetcher.slots.counts() });
      filesystem = new Filesystem({
        tree: tree(),
        fetcher: recorder,
        readaheadChunks: settings.readaheadChunks,
        status,
        ownership: {
          claim: settings.claimOwnership ? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 } : undefined,
          uidMap: settings.uidMap,
          gidMap: settings.gidMap,
        },
        env: { ...process.env, ...Object.fromEntries(settings.parameters) },
        magicXattrsVisibility: settings.magicXattrsVisibility,
        cacheUsage: () => ({ capacity: Math.max(settings.quotaLimitMb, 0) * 1024 * 1024, used: cache.quota.size() }),
        pins: cache.quota,
      });
      const fuse = new FuseAdapter(filesystem, {
        mountpoint: o.mountpoint,
        kcacheTimeoutS: settings.kcacheTimeoutS,
        checkPermissions: settings.checkPermissions,
        onIoError: (op, path, e) => o.log.error(`${op} ${path}: ${(e as Error).message}`),
        observe: instrumentation.fuse,
      });
      await fuse.mount();
      if (!fuse.perOpenCacheFlags) {
        o.log.warn('fuse-native is not the patched build (scripts/build-fuse-native.sh): a file kept open across a revision update may read pages of the new version');
      }
      o.log.info(
        `mounted revision ${first.revision} (root catalog ${boot.rootHash}) on ${o.mountpoint}` +
          `${boot.offline ? ' offline' : ''}${boot.fixed ? ' (fixed root hash)' : ''}`,
      );
      if (!boot.fixed && settings.autoUpdate) updater.start();
      const fs = filesystem;
      const prefetcher = new Prefetcher({
        fetcher,
        recorder,
        objectRequests: (path) => fs.objectRequests(path),
        attachCatalogsOf: async (path) => void (await tree().list(catalogPath(path))),
        settings,
        log: o.log,
      });
      const control = new MountControl({
        fqrn: o.fqrn,
        mountpoint: o.mountpoint,
        pid: process.pid,
        version: VERSION,
        network: downloader,
        quota: cache.quota,
        limitBytes: Math.max(settings.quotaLimitMb, 0) * 1024 * 1024,
        revisions: updater,
        updatable: !boot.fixed,
        filesystem,
        fetcher,
        parameters: () => formatShowConfig(config, settings, { short: true }),
        prefetch: prefetcher,
      });
      // Without a control socket the mount still serves; only `cvmfs-ts talk` cannot reach it.
      talk = await TalkServer.start(talkSocketPath(settings.cacheDir, o.fqrn), (line) => control.answer(line)).catch((e: unknown) => {
        o.log.warn(`no control socket: ${describeError(e)}`);
        return undefined;
      });
      const mount = new Mount(settings, config, updater, filesystem, fuse, downloader, externalDownloader, cache, talk, prefetcher);
      mount.instrumentation = instrumentation;
      return mount;
    } catch (e) {
      await instrumentation.close();
      await downloader.close();
      await externalDownloader?.close();
      await cache.close();
      throw e;
    }
  }

  async unmount(): Promise<void> {
    await this.talk?.close();
    this.prefetcher.close();
    this.revisions.stop();
    await this.fuse.unmount();
    for (const c of this.revisions.mounted.tree.catalogs()) c.db.close();
    await this.downloader.close();
    await this.externalDownloader?.close();
    await this.cache.close(); // flushes the LRU state, releases this mount's pins
    await this.instrumentation?.close();
  }
}

