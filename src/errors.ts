/**
 * Typed errors with stable codes. They travel up unchanged; only the edges translate them
 * (the CLI into one sentence and an exit status, the FUSE adapter into an errno).
 */
const BRAND = Symbol.for('cvmfs-ts.error');

export type ErrorCode =
  | 'E_FORMAT' // bytes that do not parse as the CVMFS format says
  | 'E_HASH_MISMATCH' // content does not hash to its name
  | 'E_SIGNATURE' // a manifest or whitelist signature does not verify
  | 'E_WHITELIST' // whitelist expired, wrong repository, certificate not listed
  | 'E_MANIFEST' // manifest fields unacceptable (name, root path)
  | 'E_KEY' // a key or certificate that cannot be read or used
  | 'E_NOT_FOUND' // an object, file or path that is not there
  | 'E_IO' // a local file system operation failed
  | 'E_NETWORK' // an HTTP transfer failed
  | 'E_SOURCE' // a publish source entry that cannot be published
  | 'E_USAGE' // wrong command-line input
  | 'E_EXISTS' // a name that is already taken (snapshot key)
  | 'E_PRECONDITION' // the object is in the wrong state for the operation (snapshot kind, children)
  | 'E_INVALID' // a request argument that cannot be right
  | 'E_UNAVAILABLE'; // a dependency that is not there right now (a repository that cannot be mounted)

export class CvmfsError extends Error {
  readonly [BRAND] = true;
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
  static is(e: unknown, code?: ErrorCode): e is CvmfsError {
    return (
      typeof e === 'object' &&
      e !== null &&
      (e as Record<symbol, unknown>)[BRAND] === true &&
      (code === undefined || (e as CvmfsError).code === code)
    );
  }
}

export class FormatError extends CvmfsError {
  constructor(message: string, options?: ErrorOptions) {
    super('E_FORMAT', message, options);
  }
}

export class HashMismatchError extends CvmfsError {
  constructor(
    readonly what: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super('E_HASH_MISMATCH', `${what}: content hashes to ${actual}, expected ${expected}`);
  }
}

export class SignatureError extends CvmfsError {
  constructor(message: string, options?: ErrorOptions) {
    super('E_SIGNATURE', message, options);
  }
}

export class SourceError extends CvmfsError {
  constructor(
    readonly path: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super('E_SOURCE', `${path}: ${message}`, options);
  }
}

/** The message of an unknown thrown value, for one-line reports. */
export function describeError(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
