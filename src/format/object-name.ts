/** Where content-addressed objects live in a repository and in the cache (§1.7, §5.9). */
import type { ContentHash, ObjectSuffix } from './hash';

/** `data/XX/rest[-algo][suffix]`, relative to the repository root, without a leading slash. */
export function objectPath(hash: ContentHash, suffix: ObjectSuffix = ''): string {
  const text = hash.toString();
  return `data/${text.slice(0, 2)}/${text.slice(2)}${suffix}`;
}

/** `XX/rest[-algo]`: the cache layout has no suffix letter. */
export function cachePath(hash: ContentHash): string {
  const text = hash.toString();
  return `${text.slice(0, 2)}/${text.slice(2)}`;
}
