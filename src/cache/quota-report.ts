/**
 * The text forms of the quota ledger, shared by `cvmfs-ts cache` (offline, on the directory) and the
 * mount's control socket (`cvmfs-ts talk … cache size|list`), so both answer alike.
 */
import type { QuotaEntry, QuotaUsage } from './quota';

const MB = 1024 * 1024;

export function megabytes(bytes: number): string {
  return `${Math.round(bytes / MB)}MB`;
}

/** cvmfs_talk's `cache size` sentence, plus the limit (bytes, 0 = unknown) and the object count. */
export function formatCacheSize(u: QuotaUsage, limitBytes: number): string {
  return (
    `Current cache size is ${megabytes(u.bytes)} (${u.bytes} Bytes), pinned: ${megabytes(u.pinnedBytes)} (${u.pinnedBytes} Bytes), ` +
    `limit: ${limitBytes > 0 ? megabytes(limitBytes) : 'unknown'}, objects: ${u.objects}\n`
  );
}

/** `<hash> <size> <kind> <pinned|held:pids|-> <description>`, one object per line. */
export function formatQuotaEntry(e: QuotaEntry): string {
  const pin = [e.pinned ? 'pinned' : '', e.heldBy.length ? `held:${e.heldBy.join(',')}` : ''].filter(Boolean).join(',') || '-';
  return `${e.hash} ${e.size} ${e.kind} ${pin} ${e.description}`;
}
