/**
 * The gRPC edge: containerd.services.snapshots.v1.Snapshots on a unix socket, as a containerd
 * proxy plugin of type "snapshot" expects. Converts protobuf messages to the snapshotter's
 * vocabulary and typed errors to the gRPC status codes containerd maps back to its errdefs.
 */
import { lstat, mkdir, unlink, chmod } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CvmfsError, describeError } from '../errors';
import type { Snapshotter } from './snapshotter';
import type { Kind, Mount, SnapshotInfo } from './types';
import {
  loadSnapshotsApi,
  type CommitSnapshotRequest,
  type Empty,
  type InfoResponse,
  type KeyRequest,
  type ListSnapshotsRequest,
  type ListSnapshotsResponse,
  type MountsResponse,
  type PrepareSnapshotRequest,
  type ProtoInfo,
  type ProtoKind,
  type ProtoMount,
  type UpdateSnapshotRequest,
  type UsageResponse,
} from './proto';

const KIND_TO_PROTO: Record<Kind, ProtoKind> = { view: 'VIEW', active: 'ACTIVE', committed: 'COMMITTED' };

/** Snapshots per List message: containerd's own server batches the stream the same way. */
const LIST_BATCH = 100;

export function statusOf(e: unknown): grpc.status {
  if (!CvmfsError.is(e)) return grpc.status.UNKNOWN;
  switch (e.code) {
    case 'E_NOT_FOUND':
      return grpc.status.NOT_FOUND;
    case 'E_EXISTS':
      return grpc.status.ALREADY_EXISTS;
    case 'E_PRECONDITION':
    case 'E_FORMAT':
      return grpc.status.FAILED_PRECONDITION;
    case 'E_INVALID':
      return grpc.status.INVALID_ARGUMENT;
    case 'E_UNAVAILABLE':
      return grpc.status.UNAVAILABLE;
    default:
      return grpc.status.UNKNOWN;
  }
}

function toProtoMount(m: Mount): ProtoMount {
  return { type: m.type, source: m.source, target: '', options: [...m.options] };
}

function timestamp(us: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(us / 1e6);
  return { seconds, nanos: (us - seconds * 1e6) * 1000 };
}

export function toProtoInfo(i: SnapshotInfo): ProtoInfo {
  return {
    name: i.name,
    parent: i.parent,
    kind: KIND_TO_PROTO[i.kind],
    created_at: timestamp(i.createdUs),
    updated_at: timestamp(i.updatedUs),
    labels: { ...i.labels },
  };
}

export interface ServerOptions {
  /** Logs every call with its arguments (labels included). */
  readonly verbose?: boolean;
  readonly log?: (line: string) => void;
  /** Told about every answered call (metrics): its method, duration and status code name. */
  readonly metrics?: { request(method: string, seconds: number, code: string): void };
}

export interface SnapshotterServer {
  readonly socket: string;
  close(): Promise<void>;
}

type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>;

export async function serveSnapshotter(snapshotter: Snapshotter, socket: string, o: ServerOptions = {}): Promise<SnapshotterServer> {
  const log = o.log ?? (() => undefined);
  const { service } = loadSnapshotsApi();

  function unary<Req, Res>(method: string, run: (req: Req) => Promise<Res> | Res): Unary<Req, Res> {
    return (call, callback) => {
      if (o.verbose) log(`${method} ${JSON.stringify(call.request)}`);
      const started = performance.now();
      const record = (code: grpc.status) => o.metrics?.request(method, (performance.now() - started) / 1000, grpc.status[code]);
      Promise.resolve()
        .then(() => run(call.request))
        .then(
          (res) => {
            record(grpc.status.OK);
            callback(null, res);
          },
          (e: unknown) => {
            const code = statusOf(e);
            record(code);
            if (o.verbose || code === grpc.status.UNKNOWN) log(`${method} failed: ${grpc.status[code]}: ${describeError(e)}`);
            callback({ code, details: describeError(e) } as grpc.ServiceError, null);
          },
        );
    };
  }

  const mounts = (ms: Mount[]): MountsResponse => ({ mounts: ms.map(toProtoMount) });
  const empty: Empty = {};

  const handlers: grpc.UntypedServiceImplementation = {
    Prepare: unary<PrepareSnapshotRequest, MountsResponse>('Prepare', async (r) => mounts(await snapshotter.prepare(r.key, r.parent, r.labels))),
    View: unary<PrepareSnapshotRequest, MountsResponse>('View', async (r) => mounts(await snapshotter.view(r.key, r.parent, r.labels))),
    Mounts: unary<KeyRequest, MountsResponse>('Mounts', async (r) => mounts(await snapshotter.mounts(r.key))),
    Commit: unary<CommitSnapshotRequest, Empty>('Commit', async (r) => {
      await snapshotter.commit(r.name, r.key, r.labels);
      return empty;
    }),
    Remove: unary<KeyRequest, Empty>('Remove', async (r) => {
      await snapshotter.remove(r.key);
      return empty;
    }),
    Stat: unary<KeyRequest, InfoResponse>('Stat', (r) => ({ info: toProtoInfo(snapshotter.stat(r.key)) })),
    Update: unary<UpdateSnapshotRequest, InfoResponse>('Update', (r) => {
      const info = r.info ?? { name: '', labels: {} };
      return { info: toProtoInfo(snapshotter.update({ name: info.name, labels: info.labels }, r.update_mask?.paths ?? [])) };
    }),
    Usage: unary<KeyRequest, UsageResponse>('Usage', (r) => snapshotter.usage(r.key)),
    Cleanup: unary<{ snapshotter: string }, Empty>('Cleanup', async () => {
      await snapshotter.cleanup();
      return empty;
    }),
    List: (call: grpc.ServerWritableStream<ListSnapshotsRequest, ListSnapshotsResponse>) => {
      if (o.verbose) log(`List ${JSON.stringify(call.request)}`);
      const started = performance.now();
      const record = (code: grpc.status) => o.metrics?.request('List', (performance.now() - started) / 1000, grpc.status[code]);
      try {
        const infos = snapshotter.list(call.request.filters).map(toProtoInfo);
        for (let i = 0; i < infos.length; i += LIST_BATCH) call.write({ info: infos.slice(i, i + LIST_BATCH) });
        call.end();
        record(grpc.status.OK);
      } catch (e) {
        record(statusOf(e));
        // grpc-js ends a server stream with a status when the call emits an error carrying a code.
        call.emit('error', { code: statusOf(e), details: describeError(e) });
      }
    },
  };

  const server = new grpc.Server();
  server.addService(service, handlers);
  await mkdir(dirname(socket), { recursive: true, mode: 0o700 });
  // A socket file left by a killed snapshotter would make bind fail with EADDRINUSE.
  const st = await lstat(socket).catch(() => undefined);
  if (st?.isSocket()) await unlink(socket);
  await new Promise<void>((done, fail) =>
    server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? fail(err) : done())),
  );
  // Only root (containerd) may talk to it: the API creates and deletes directories.
  await chmod(socket, 0o600);
  return {
    socket,
    close: () =>
      new Promise<void>((done) => {
        server.tryShutdown(() => done());
        // Streams containerd keeps open must not hold shutdown forever.
        setTimeout(() => server.forceShutdown(), 2000).unref();
      }),
  };
}
