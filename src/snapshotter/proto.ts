/**
 * containerd's snapshots API (containerd.services.snapshots.v1), loaded at run time from the
 * .proto files in <package root>/proto, plus the TypeScript shapes of its messages as
 * @grpc/proto-loader presents them with the options below (proto field names, enums as names,
 * int64 as numbers, defaults filled in).
 */
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** <package root>/proto: the same from src/snapshotter (ts-node) and dist/snapshotter (built). */
export const PROTO_ROOT = resolve(__dirname, '../../proto');
export const SNAPSHOTS_PROTO = 'containerd/services/snapshots/v1/snapshots.proto';
export const SNAPSHOTS_SERVICE = 'containerd.services.snapshots.v1.Snapshots';

export type ProtoKind = 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED';

export interface ProtoMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface ProtoTimestamp {
  seconds: number | string;
  nanos: number;
}

export interface ProtoInfo {
  name: string;
  parent: string;
  kind: ProtoKind;
  created_at: ProtoTimestamp | null;
  updated_at: ProtoTimestamp | null;
  labels: Record<string, string>;
}

export interface PrepareSnapshotRequest {
  snapshotter: string;
  key: string;
  parent: string;
  labels: Record<string, string>;
}
export type ViewSnapshotRequest = PrepareSnapshotRequest;
export interface KeyRequest {
  snapshotter: string;
  key: string;
}
export interface CommitSnapshotRequest {
  snapshotter: string;
  name: string;
  key: string;
  labels: Record<string, string>;
}
export interface UpdateSnapshotRequest {
  snapshotter: string;
  info: ProtoInfo | null;
  update_mask: { paths: string[] } | null;
}
export interface ListSnapshotsRequest {
  snapshotter: string;
  filters: string[];
}
export interface MountsResponse {
  mounts: ProtoMount[];
}
export interface InfoResponse {
  info: ProtoInfo;
}
export interface ListSnapshotsResponse {
  info: ProtoInfo[];
}
export interface UsageResponse {
  size: number;
  inodes: number;
}
export type Empty = Record<string, never>;

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
  includeDirs: [PROTO_ROOT],
};

/** The Snapshots service: its definition (for a server) and a client constructor (for tests and tools). */
export function loadSnapshotsApi(): { service: grpc.ServiceDefinition; Client: grpc.ServiceClientConstructor } {
  const definition = protoLoader.loadSync(SNAPSHOTS_PROTO, LOADER_OPTIONS);
  const root = grpc.loadPackageDefinition(definition);
  let node: unknown = root;
  for (const part of SNAPSHOTS_SERVICE.split('.')) node = (node as Record<string, unknown>)[part];
  const Client = node as grpc.ServiceClientConstructor;
  return { service: Client.service, Client };
}
