/**
 * A promise-based client of containerd's snapshots API (what containerd's proxy calls), for tests
 * that talk to a snapshotter socket directly.
 *
 *   const c = snapshotsClient('/tmp/x/snap.sock');
 *   const mounts = await c.prepare('k', '', { a: 'b' });
 *   const err = await c.prepare('k', '').catch((e: GrpcError) => e);   // err.code === status.ALREADY_EXISTS
 */
import * as grpc from '@grpc/grpc-js';
import { loadSnapshotsApi, type ProtoInfo, type ProtoMount } from '../../src/snapshotter/proto';

export type GrpcError = grpc.ServiceError;
export const status = grpc.status;

export interface SnapshotsClient {
  prepare(key: string, parent?: string, labels?: Record<string, string>): Promise<ProtoMount[]>;
  view(key: string, parent?: string, labels?: Record<string, string>): Promise<ProtoMount[]>;
  mounts(key: string): Promise<ProtoMount[]>;
  commit(name: string, key: string, labels?: Record<string, string>): Promise<void>;
  remove(key: string): Promise<void>;
  stat(key: string): Promise<ProtoInfo>;
  update(name: string, labels: Record<string, string>, paths?: string[]): Promise<ProtoInfo>;
  list(filters?: string[]): Promise<ProtoInfo[]>;
  usage(key: string): Promise<{ size: number; inodes: number }>;
  cleanup(): Promise<void>;
  close(): void;
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type Method = (req: unknown, cb: Callback) => void;

export function snapshotsClient(socket: string, snapshotter = 'cvmfs-ts'): SnapshotsClient {
  const { Client } = loadSnapshotsApi();
  const client = new Client(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as Record<string, Method> & grpc.Client;
  const call = <T>(method: string, req: object): Promise<T> =>
    new Promise((done, fail) => client[method]!.call(client, { snapshotter, ...req }, (err, res) => (err ? fail(err) : done(res as T))));
  return {
    prepare: async (key, parent = '', labels = {}) => (await call<{ mounts: ProtoMount[] }>('Prepare', { key, parent, labels })).mounts,
    view: async (key, parent = '', labels = {}) => (await call<{ mounts: ProtoMount[] }>('View', { key, parent, labels })).mounts,
    mounts: async (key) => (await call<{ mounts: ProtoMount[] }>('Mounts', { key })).mounts,
    commit: async (name, key, labels = {}) => void (await call('Commit', { name, key, labels })),
    remove: async (key) => void (await call('Remove', { key })),
    stat: async (key) => (await call<{ info: ProtoInfo }>('Stat', { key })).info,
    update: async (name, labels, paths) =>
      (await call<{ info: ProtoInfo }>('Update', { info: { name, labels }, update_mask: paths ? { paths } : null })).info,
    list: (filters = []) =>
      new Promise((done, fail) => {
        const out: ProtoInfo[] = [];
        const stream = (client as unknown as Record<string, (req: unknown) => grpc.ClientReadableStream<{ info: ProtoInfo[] }>>).List!.call(client, {
          snapshotter,
          filters,
        });
        stream.on('data', (m: { info: ProtoInfo[] }) => out.push(...m.info));
        stream.on('error', fail);
        stream.on('end', () => done(out));
      }),
    usage: (key) => call('Usage', { key }),
    cleanup: async () => void (await call('Cleanup', {})),
    close: () => client.close(),
  };
}
