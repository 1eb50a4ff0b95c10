/**
 * Thin image layers (§8.3): a committed layer whose content holds `thin.json` stands for the CVMFS
 * layer directories that file names. Mounting a snapshot on top of it stacks those directories
 * (top layer first) instead of the thin layer itself.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { THIN_JSON_NAME, layerDirectory, parseThinJson } from '../image/thin-json';
import { precondition } from './errors';
import type { Repositories } from './repositories';
import { warmUpThinImage } from '../thin/warm-up';

/**
 * The text of `<fs>/thin.json` if the layer is a thin layer, else undefined. A thin.json that does
 * not parse makes an ordinary layer: an image may carry such a file for its own reasons.
 */
export async function readThinJson(fs: string, log?: (line: string) => void): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(join(fs, THIN_JSON_NAME), 'utf8');
  } catch {
    return undefined;
  }
  try {
    parseThinJson(text);
    return text;
  } catch (e) {
    log?.(`${join(fs, THIN_JSON_NAME)} is not a thin image description, layer taken as is: ${(e as Error).message}`);
    return undefined;
  }
}

/**
 * The layer directories of a thin layer, top first, with their repositories mounted; with `warmUp`,
 * also their catalogs attached and the image's access profile being prefetched (warm-up.ts).
 */
export async function thinLayerDirectories(
  thinJson: string,
  repos: Repositories,
  o: { readonly warmUp: boolean; readonly log?: (line: string) => void },
): Promise<string[]> {
  const thin = parseThinJson(thinJson);
  for (const repository of new Set(thin.layers.map((l) => l.repository))) await repos.ensure(repository);
  if (o.warmUp) await warmUpThinImage(thin, { cvmfsRoot: repos.cvmfsRoot, log: o.log });
  const dirs = [...thin.layers].reverse().map((layer) => layerDirectory(layer, repos.cvmfsRoot));
  const found = await Promise.all(dirs.map((dir) => stat(dir).then((s) => s.isDirectory(), () => false)));
  const missing = found.indexOf(false);
  if (missing >= 0) {
    const layer = thin.layers[thin.layers.length - 1 - missing]!;
    throw precondition(`thin image layer ${layer.digest} is not in repository ${layer.repository} (${dirs[missing]})`);
  }
  return dirs;
}
