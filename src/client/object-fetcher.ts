/** What the file system needs from the fetch layer: a verified, decompressed cache file for an object. */
import type { ContentHash, ObjectSuffix } from '../format/hash';
import type { DownloadClass } from '../fetch/download-slots';

export interface FetchRequest {
  hash: ContentHash;
  suffix: ObjectSuffix;
  compressed: boolean;
  /** Decompressed size, when the catalog knows it. */
  size?: number;
  /** Repository path or catalog name, for messages. */
  description: string;
  /** The repository path of the file the object belongs to (file content only). */
  path?: string;
  /** Who waits: a reader (default) or background work (readahead, prefetch). */
  priority?: DownloadClass;
  /** External files (§7.1) are fetched by repository path from CVMFS_EXTERNAL_URL. */
  external?: { path: string; range?: { offset: number; size: number } };
}

export interface ObjectFetcher {
  /** Path of the verified, decompressed object in the cache (downloading it first on a miss). */
  fetch(req: FetchRequest): Promise<string>;
}
