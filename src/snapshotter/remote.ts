/**
 * Remote layers: a layer that a CVMFS repository already holds unpacked
 * (<cvmfsRoot>/<repo>/.layers/<d[0:2]>/<d>/layerfs, §8.1) need not be downloaded and unpacked.
 *
 * containerd asks for it when it unpacks an image: Prepare(key, parent) with the label
 * `containerd.io/snapshot.ref` = the chain id the committed layer snapshot will have, plus the
 * layer digest in a label that depends on the client: containerd's CRI plugin sends
 * `containerd.io/snapshot/cri.layer-digest` (with disable_snapshot_annotations = false), and
 * `ctr-remote images rpull` (stargz-snapshotter 0.12) sends `containerd.io/snapshot/remote/stargz.digest`.
 * Answering ALREADY_EXISTS after creating the committed snapshot tells containerd to skip the
 * download and the unpack of that layer.
 */
import { stat } from 'node:fs/promises';
import { layerDirectory, layerPath } from '../image/thin-json';
import type { Labels } from './types';
import type { Repositories } from './repositories';

export const TARGET_LABEL = 'containerd.io/snapshot.ref';
export const CRI_LAYER_DIGEST_LABEL = 'containerd.io/snapshot/cri.layer-digest';
export const STARGZ_DIGEST_LABEL = 'containerd.io/snapshot/remote/stargz.digest';
/** Where the layer digest is looked for, in this order. */
export const LAYER_DIGEST_LABELS = [CRI_LAYER_DIGEST_LABEL, STARGZ_DIGEST_LABEL] as const;

export interface RemoteLayerRequest {
  /** Name of the committed snapshot containerd expects. */
  readonly target: string;
  /** 64 hex digits. */
  readonly digest: string;
}

/** The remote-layer question in a Prepare's labels, if it asks one (and the digest is sha256). */
export function remoteLayerRequest(labels: Labels): RemoteLayerRequest | undefined {
  const target = labels[TARGET_LABEL];
  if (!target) return undefined;
  for (const label of LAYER_DIGEST_LABELS) {
    const m = /^sha256:([0-9a-f]{64})$/.exec(labels[label] ?? '');
    if (m) return { target, digest: m[1]! };
  }
  return undefined;
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/**
 * The directory of layer `digest` in the first of `repositories` that has it, or undefined.
 * A repository that cannot be mounted is skipped: the layer is then pulled the ordinary way.
 */
export async function findRemoteLayer(digest: string, repositories: readonly string[], repos: Repositories): Promise<string | undefined> {
  for (const repository of repositories) {
    try {
      await repos.ensure(repository);
    } catch {
      continue;
    }
    const dir = layerDirectory({ digest, repository, path: layerPath(digest) }, repos.cvmfsRoot);
    if (await isDirectory(dir)) return dir;
  }
  return undefined;
}
