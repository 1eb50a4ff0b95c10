/**
 * Image references in skopeo's transport syntax, the way users already write them:
 *
 *   oci:DIR[:TAG]                  an OCI image layout directory
 *   oci-archive:FILE[:TAG]         a tar of an OCI image layout
 *   docker-archive:FILE[:NAME:TAG | :@N]   `docker save` output (optionally picking one image)
 *   docker://[HOST[:PORT]/]NAME[:TAG][@sha256:…]   a registry (v2 API)
 *
 * As in containers/image, the first ':' after the transport ends the path, so a path cannot contain a
 * colon. A docker name without a host goes to Docker Hub (`registry-1.docker.io`, with `library/` for
 * one-component names), as `docker pull` does.
 */
import { resolve } from 'node:path';
import { CvmfsError } from '../errors';
import { isDigest, type Digest } from './digest';

export const DOCKER_HUB_HOST = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

export interface OciLayoutReference {
  readonly transport: 'oci';
  readonly path: string;
  /** `org.opencontainers.image.ref.name`; undefined = the layout's only manifest. */
  readonly tag?: string;
}

export interface OciArchiveReference {
  readonly transport: 'oci-archive';
  readonly path: string;
  readonly tag?: string;
}

export interface DockerArchiveReference {
  readonly transport: 'docker-archive';
  readonly path: string;
  /** Which image of a multi-image archive: by `RepoTags` entry or by position; undefined = the only one. */
  readonly select?: { readonly name: string } | { readonly index: number };
}

/** A name in a registry. */
export interface DockerReference {
  readonly transport: 'docker';
  /** `host` or `host:port`. */
  readonly registry: string;
  /** e.g. `library/alpine`. */
  readonly repository: string;
  /** Undefined when only a digest was given. */
  readonly tag?: string;
  readonly digest?: Digest;
}

export type ImageReference = OciLayoutReference | OciArchiveReference | DockerArchiveReference | DockerReference;

export class ImageReferenceError extends CvmfsError {
  constructor(
    readonly reference: string,
    reason: string,
  ) {
    super('E_USAGE', `image reference ${JSON.stringify(reference)}: ${reason}`);
  }
}

// The grammar of github.com/distribution/reference, without the domain part.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$|^\[[0-9a-fA-F:.]+\](?::[0-9]+)?$/;

export function parseImageReference(source: string): ImageReference {
  const colon = source.indexOf(':');
  if (colon <= 0) throw new ImageReferenceError(source, 'expected TRANSPORT:… (oci:, oci-archive:, docker-archive:, docker://)');
  const transport = source.slice(0, colon);
  const rest = source.slice(colon + 1);
  switch (transport) {
    case 'oci':
    case 'oci-archive': {
      const { path, tail } = splitPath(source, rest);
      // OCI ref names are free-form (annotation values); only an empty one is meaningless.
      if (tail === '') throw new ImageReferenceError(source, 'the tag after the path is empty');
      return { transport, path, ...(tail ? { tag: tail } : {}) };
    }
    case 'docker-archive': {
      const { path, tail } = splitPath(source, rest);
      if (!tail) return { transport, path };
      if (tail.startsWith('@')) {
        const index = Number(tail.slice(1));
        if (!Number.isInteger(index) || index < 0) throw new ImageReferenceError(source, `${tail} is not @INDEX`);
        return { transport, path, select: { index } };
      }
      return { transport, path, select: { name: tail } };
    }
    case 'docker':
      if (!rest.startsWith('//')) throw new ImageReferenceError(source, 'expected docker://NAME');
      return parseDockerReference(rest.slice(2), source);
    default:
      throw new ImageReferenceError(source, `unknown transport ${JSON.stringify(transport)}`);
  }
}

function splitPath(source: string, rest: string): { path: string; tail?: string } {
  const colon = rest.indexOf(':');
  const path = colon < 0 ? rest : rest.slice(0, colon);
  if (path === '') throw new ImageReferenceError(source, 'the path is empty');
  return colon < 0 ? { path } : { path, tail: rest.slice(colon + 1) };
}

/**
 * `[HOST[:PORT]/]NAME[:TAG][@sha256:…]` as docker understands it: the first component is a host when it
 * has a dot or a port or is `localhost`. Without tag and digest the tag is `latest`.
 */
export function parseDockerReference(name: string, original = name): DockerReference {
  let rest = name;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw new ImageReferenceError(original, `${JSON.stringify(d)} is not a sha256 digest`);
    digest = d;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const tagColon = rest.indexOf(':', lastSlash + 1);
  if (tagColon >= 0) {
    tag = rest.slice(tagColon + 1);
    rest = rest.slice(0, tagColon);
    if (!TAG.test(tag)) throw new ImageReferenceError(original, `${JSON.stringify(tag)} is not a valid tag`);
  }
  const parts = rest.split('/');
  let registry = DOCKER_HUB_HOST;
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost' || parts[0].startsWith('['))) {
    registry = parts.shift()!;
    if (!HOST.test(registry)) throw new ImageReferenceError(original, `${JSON.stringify(registry)} is not a valid registry host`);
    if (DOCKER_HUB_ALIASES.has(registry)) registry = DOCKER_HUB_HOST;
  }
  if (registry === DOCKER_HUB_HOST && parts.length === 1) parts.unshift('library');
  for (const p of parts) {
    if (!COMPONENT.test(p)) throw new ImageReferenceError(original, `${JSON.stringify(p)} is not a valid name component`);
  }
  const repository = parts.join('/');
  if (repository.length > 255) throw new ImageReferenceError(original, 'the name is longer than 255 characters');
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { transport: 'docker', registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** `host/name:tag@digest` without a scheme (what the registry client and `docker pull` take). */
export function formatDockerName(ref: DockerReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/**
 * The origin string for thin.json (§8.3): `docker://host/name:tag[@digest]` for registries, the
 * transport with an absolute path otherwise. `manifestDigest` is appended when the reference did not
 * already pin one, so the origin says exactly which image was converted (not for docker-archive,
 * whose manifest is synthesised and so has no digest of its own).
 */
export function formatOrigin(ref: ImageReference, manifestDigest?: Digest): string {
  switch (ref.transport) {
    case 'docker': {
      const digest = ref.digest ?? manifestDigest;
      return `docker://${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${digest ? `@${digest}` : ''}`;
    }
    case 'oci':
    case 'oci-archive':
      return `${ref.transport}:${resolve(ref.path)}${ref.tag ? `:${ref.tag}` : ''}${manifestDigest ? `@${manifestDigest}` : ''}`;
    case 'docker-archive': {
      const sel = ref.select === undefined ? '' : 'name' in ref.select ? `:${ref.select.name}` : `:@${ref.select.index}`;
      // No digest: a docker-archive holds no manifest of its own, ours is synthesised.
      return `docker-archive:${resolve(ref.path)}${sel}`;
    }
  }
}
