/**
 * `oci-archive:FILE[:TAG]` — a tar of an OCI image layout (what `skopeo copy … oci-archive:` and
 * `buildah push oci-archive:` write). Read in place through the tar's index (layout-files.ts); a
 * compressed archive is decompressed to a temporary file, removed on close.
 */
import { OciLayoutSource, checkLayout } from './oci-layout';
import type { ImageSourceOptions } from './image-source';
import type { OciArchiveReference } from './reference';
import { TarFiles } from './layout-files';

export async function openOciArchive(ref: OciArchiveReference, options: ImageSourceOptions): Promise<OciLayoutSource> {
  const files = await TarFiles.open(ref.path, options.tmpDir);
  try {
    await checkLayout(files);
  } catch (e) {
    await files.close();
    throw e;
  }
  return new OciLayoutSource(ref, files, ref.tag, options);
}
