/**
 * The snapshotter's persistent metadata: one SQLite table of snapshots (ROOT/metadata.db).
 *
 * Every change is one SQLite transaction, so a killed snapshotter restarts with a consistent
 * table; the file system work that must succeed together with a change (creating or renaming the
 * snapshot's directory) runs inside the transaction through a callback, so a failure rolls the
 * row back. Directories left over by a crash between the two are garbage that Cleanup removes.
 *
 * better-sqlite3 is synchronous; every statement here touches a handful of rows by index.
 */
import Database from 'better-sqlite3';
import type { Kind, Labels, SnapshotInfo } from './types';
import { alreadyExists, invalid, notFound, precondition } from './errors';

/** One row: a snapshot plus what only the snapshotter needs to know about it. */
export interface SnapshotRecord extends SnapshotInfo {
  readonly id: number;
  readonly parentId: number | null;
  /** Usage fixed when the snapshot was committed (null while active or for views). */
  readonly size: number | null;
  readonly inodes: number | null;
  /**
   * A read-only directory outside ROOT that is this snapshot's content (a remote layer found in a
   * CVMFS repository); null for snapshots whose content is ROOT/snapshots/<id>/fs.
   */
  readonly external: string | null;
  /** The text of thin.json when this committed snapshot is a thin image's layer. */
  readonly thinJson: string | null;
}

export interface NewSnapshot {
  readonly key: string;
  readonly kind: Kind;
  /** Name of a committed snapshot, or '' for none. */
  readonly parent: string;
  readonly labels: Labels;
  readonly external?: string;
  readonly thinJson?: string;
}

export interface CommitFields {
  readonly labels: Labels;
  readonly size: number;
  readonly inodes: number;
  readonly thinJson: string | null;
}

const KIND_CODE: Record<Kind, number> = { view: 1, active: 2, committed: 3 };
const KIND_OF: Record<number, Kind> = { 1: 'view', 2: 'active', 3: 'committed' };

interface Row {
  id: number;
  key: string;
  kind: number;
  parent_id: number | null;
  parent_key: string | null;
  labels: string;
  created_us: number;
  updated_us: number;
  size: number | null;
  inodes: number | null;
  external: string | null;
  thin_json: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  kind INTEGER NOT NULL,
  parent_id INTEGER REFERENCES snapshots(id),
  labels TEXT NOT NULL DEFAULT '{}',
  created_us INTEGER NOT NULL,
  updated_us INTEGER NOT NULL,
  size INTEGER,
  inodes INTEGER,
  external TEXT,
  thin_json TEXT
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
`;

const SELECT = `SELECT s.*, p.key AS parent_key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`;

function toRecord(r: Row): SnapshotRecord {
  return {
    id: r.id,
    name: r.key,
    parent: r.parent_key ?? '',
    parentId: r.parent_id,
    kind: KIND_OF[r.kind] ?? 'view',
    createdUs: r.created_us,
    updatedUs: r.updated_us,
    labels: JSON.parse(r.labels) as Labels,
    size: r.size,
    inodes: r.inodes,
    external: r.external,
    thinJson: r.thin_json,
  };
}

/** Labels with empty values are dropped, as containerd's bolt store does. */
export function cleanLabels(labels: Labels): Labels {
  const out: Labels = {};
  for (const k of Object.keys(labels).sort()) if (labels[k] !== '') out[k] = labels[k]!;
  return out;
}

export class SnapshotStore {
  private lastUs = 0;
  private constructor(private readonly db: Database.Database) {}

  /** Microseconds since the epoch, strictly increasing so that updates keep their order. */
  private nowUs(): number {
    this.lastUs = Math.max(Date.now() * 1000, this.lastUs + 1);
    return this.lastUs;
  }

  static open(file: string): SnapshotStore {
    const db = new Database(file);
    // WAL with FULL sync: a SIGKILLed or crashed snapshotter never loses a committed change.
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.exec(SCHEMA);
    return new SnapshotStore(db);
  }

  close(): void {
    this.db.close();
  }

  get(key: string): SnapshotRecord | undefined {
    const row = this.db.prepare(`${SELECT} WHERE s.key = ?`).get(key) as Row | undefined;
    return row && toRecord(row);
  }

  require(key: string): SnapshotRecord {
    const r = this.get(key);
    if (!r) throw notFound(`snapshot ${JSON.stringify(key)}`);
    return r;
  }

  byId(id: number): SnapshotRecord | undefined {
    const row = this.db.prepare(`${SELECT} WHERE s.id = ?`).get(id) as Row | undefined;
    return row && toRecord(row);
  }

  /** The parents of a snapshot, nearest first. */
  parents(r: SnapshotRecord): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    let next = r.parentId;
    while (next !== null) {
      const p = this.byId(next);
      if (!p) throw notFound(`parent ${next} of snapshot ${JSON.stringify(r.name)}`);
      out.push(p);
      next = p.parentId;
    }
    return out;
  }

  all(): SnapshotRecord[] {
    return (this.db.prepare(`${SELECT} ORDER BY s.id`).all() as Row[]).map(toRecord);
  }

  hasChildren(id: number): boolean {
    return this.db.prepare('SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1').get(id) !== undefined;
  }

  /**
   * Adds a snapshot; `materialize(id)` creates its directories inside the transaction, so a
   * failure there leaves no row. Errors as containerd's storage: the key taken → E_EXISTS, the
   * parent missing → E_NOT_FOUND, the parent not committed → E_INVALID.
   */
  create(s: NewSnapshot, materialize: (id: number) => void): SnapshotRecord {
    if (s.key === '') throw invalid('snapshot key must not be empty');
    return this.db.transaction((): SnapshotRecord => {
      if (this.get(s.key)) throw alreadyExists(`snapshot ${JSON.stringify(s.key)}`);
      let parentId: number | null = null;
      if (s.parent !== '') {
        const p = this.get(s.parent);
        if (!p) throw notFound(`parent snapshot ${JSON.stringify(s.parent)}`);
        if (p.kind !== 'committed') throw invalid(`parent ${JSON.stringify(s.parent)} is not a committed snapshot`);
        parentId = p.id;
      }
      const now = this.nowUs();
      const info = this.db
        .prepare(
          'INSERT INTO snapshots (key, kind, parent_id, labels, created_us, updated_us, external, thin_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(s.key, KIND_CODE[s.kind], parentId, JSON.stringify(cleanLabels(s.labels)), now, now, s.external ?? null, s.thinJson ?? null);
      const id = Number(info.lastInsertRowid);
      materialize(id);
      return this.byId(id)!;
    })();
  }

  /** Active `key` becomes committed `name`; its labels are replaced, not inherited (as containerd). */
  commit(key: string, name: string, f: CommitFields): SnapshotRecord {
    if (name === '') throw invalid('commit name must not be empty');
    return this.db.transaction((): SnapshotRecord => {
      const r = this.require(key);
      if (r.kind !== 'active') throw precondition(`snapshot ${JSON.stringify(key)} is not active`);
      if (this.get(name)) throw alreadyExists(`snapshot ${JSON.stringify(name)}`);
      const now = this.nowUs();
      this.db
        .prepare('UPDATE snapshots SET key = ?, kind = ?, labels = ?, created_us = ?, updated_us = ?, size = ?, inodes = ?, thin_json = ? WHERE id = ?')
        .run(name, KIND_CODE.committed, JSON.stringify(cleanLabels(f.labels)), now, now, f.size, f.inodes, f.thinJson, r.id);
      return this.byId(r.id)!;
    })();
  }

  /**
   * Deletes a snapshot without children; `dispose(record)` moves its directory out of the way
   * inside the transaction (a failure keeps the row).
   */
  remove(key: string, dispose: (r: SnapshotRecord) => void): SnapshotRecord {
    return this.db.transaction((): SnapshotRecord => {
      const r = this.require(key);
      if (this.hasChildren(r.id)) throw precondition(`cannot remove snapshot ${JSON.stringify(key)}: it has children`);
      this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(r.id);
      dispose(r);
      return r;
    })();
  }

  /** Writes new labels (already merged by the caller) and bumps the update time. */
  setLabels(key: string, labels: Labels): SnapshotRecord {
    return this.db.transaction((): SnapshotRecord => {
      const r = this.require(key);
      this.db.prepare('UPDATE snapshots SET labels = ?, updated_us = ? WHERE id = ?').run(JSON.stringify(cleanLabels(labels)), this.nowUs(), r.id);
      return this.byId(r.id)!;
    })();
  }
}
