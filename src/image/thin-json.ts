/**
 * `thin.json` (§8.3): the file a thin image carries instead of its layers. It names each layer by
 * its compressed digest and a `cvmfs://REPO/PATH` address, base layer first.
 *
 * Read: the DUCC form (`cvmfs://REPO/.layers/xx/<d>/layerfs`) and the older docker2cvmfs form
 * (`cvmfs://REPO/layers/<d>`); any `cvmfs://REPO/PATH` url is taken as `/cvmfs/REPO/PATH`.
 * Written: the DUCC form only, plus our `profile` field: `cvmfs://REPO/.profiles/xx/<h>/profile.json`,
 * where the image's access profile (`cvmfs-ts thin record`) is or will be published. It is named
 * from the layer list alone, so a thin image names its profile before anyone recorded it; readers
 * that do not know the field ignore it.
 */
import { createHash } from 'node:crypto';
import { FormatError } from '../errors';

export const THIN_JSON_VERSION = '1.0';
export const THIN_JSON_NAME = 'thin.json';

export interface ThinLayer {
  /** 64 hex digits of the compressed layer's sha256, without `sha256:`. */
  readonly digest: string;
  /** The repository holding the layer. */
  readonly repository: string;
  /** The layer's root directory, relative to the repository root (no leading slash). */
  readonly path: string;
}

export interface ThinImage {
  readonly version: string;
  readonly origin: string;
  /** Base layer first, as in the image manifest. */
  readonly layers: readonly ThinLayer[];
  /** Where the image's access profile lives (it may not be published yet). */
  readonly profile?: { readonly repository: string; readonly path: string };
}

const HEX64 = /^[0-9a-f]{64}$/;

/** The repository-relative directory of layer `digest` (hex) in a DUCC layout (§8.1). */
export function layerPath(digest: string): string {
  const hex = stripAlgorithm(digest);
  return `.layers/${hex.slice(0, 2)}/${hex}/layerfs`;
}

/** `sha256:<hex>` or `<hex>` → `<hex>`; anything else is a format error. */
export function stripAlgorithm(digest: string): string {
  const hex = digest.startsWith('sha256:') ? digest.slice('sha256:'.length) : digest;
  if (!HEX64.test(hex)) throw new FormatError(`layer digest ${JSON.stringify(digest)} is not a sha256 digest`);
  return hex;
}

/** The repository-relative path of the access profile of an image with these layers (base first). */
export function profilePath(digests: readonly string[]): string {
  const h = createHash('sha256')
    .update(digests.map((d) => stripAlgorithm(d)).join('\n'))
    .digest('hex');
  return `.profiles/${h.slice(0, 2)}/${h}/profile.json`;
}

/** Where a layer appears on a client: `<mountRoot>/<repository>/<path>`. */
export function layerDirectory(layer: ThinLayer, mountRoot = '/cvmfs'): string {
  return `${mountRoot}/${layer.repository}/${layer.path}`;
}

function parseUrl(url: unknown, where: string): { repository: string; path: string } {
  if (typeof url !== 'string') throw new FormatError(`${where}: url is missing`);
  const m = /^cvmfs:\/\/([^/]+)\/(.+)$/.exec(url);
  if (!m) throw new FormatError(`${where}: url ${JSON.stringify(url)} is not cvmfs://REPO/PATH`);
  const path = m[2]!.replace(/\/+$/, '');
  if (path.split('/').some((p) => p === '..' || p === '.' || p === '')) {
    throw new FormatError(`${where}: url ${JSON.stringify(url)} has an unsafe path`);
  }
  return { repository: m[1]!, path };
}

/** Parses thin.json text in either form; throws FormatError naming what is wrong. */
export function parseThinJson(text: string): ThinImage {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`thin.json is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new FormatError('thin.json is not a JSON object');
  const o = doc as Record<string, unknown>;
  if (!Array.isArray(o.layers) || o.layers.length === 0) throw new FormatError('thin.json has no layers');
  const layers = o.layers.map((raw: unknown, i): ThinLayer => {
    const where = `thin.json layer ${i}`;
    if (typeof raw !== 'object' || raw === null) throw new FormatError(`${where} is not an object`);
    const l = raw as Record<string, unknown>;
    if (typeof l.digest !== 'string') throw new FormatError(`${where}: digest is missing`);
    const digest = stripAlgorithm(l.digest);
    return { digest, ...parseUrl(l.url, where) };
  });
  return {
    version: typeof o.version === 'string' ? o.version : THIN_JSON_VERSION,
    origin: typeof o.origin === 'string' ? o.origin : '',
    layers,
    profile: o.profile === undefined ? undefined : parseUrl(o.profile, 'thin.json profile'),
  };
}

/** thin.json in the DUCC form, pretty-printed like DUCC writes it. */
export function formatThinJson(repository: string, origin: string, digests: readonly string[]): string {
  const layers = digests.map((d) => {
    const hex = stripAlgorithm(d);
    return { digest: hex, url: `cvmfs://${repository}/${layerPath(hex)}` };
  });
  const profile = `cvmfs://${repository}/${profilePath(digests)}`;
  return `${JSON.stringify({ version: THIN_JSON_VERSION, origin, layers, profile }, null, 2)}\n`;
}
