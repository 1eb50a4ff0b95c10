/**
 * Snapshot errors carry the code that the gRPC edge turns into the status containerd expects
 * (containerd maps NotFound/AlreadyExists/FailedPrecondition/InvalidArgument back to its errdefs,
 * and its pull and unpack logic branches on them).
 */
import { CvmfsError, type ErrorCode } from '../errors';

export class SnapshotError extends CvmfsError {
  constructor(code: Extract<ErrorCode, 'E_NOT_FOUND' | 'E_EXISTS' | 'E_PRECONDITION' | 'E_INVALID' | 'E_UNAVAILABLE' | 'E_IO'>, message: string, options?: ErrorOptions) {
    super(code, message, options);
  }
}

export const notFound = (what: string): SnapshotError => new SnapshotError('E_NOT_FOUND', `${what}: not found`);
export const alreadyExists = (what: string): SnapshotError => new SnapshotError('E_EXISTS', `${what}: already exists`);
export const precondition = (message: string): SnapshotError => new SnapshotError('E_PRECONDITION', message);
export const invalid = (message: string): SnapshotError => new SnapshotError('E_INVALID', message);
