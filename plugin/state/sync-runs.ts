/** History of sync cycles: the sender records each one; `vmdr status` derives lag and failures from it. */
import { SyncRunNotFound } from './errors.js';
import type { StateStore } from './store.js';

export type SyncKind = 'full' | 'incremental' | 'resync';

export interface SyncRun {
  id: number;
  protection: string;
  kind: SyncKind;
  checkpoint: string;
  since: string | null;
  /** Why this kind ("first sync", "disk vdb is raw and its dirty bitmap … is gone …"); unset for runs recorded before reasons were. */
  reason?: string;
  startedAt: Date;
  /** Unset while the run is going (or its process died before recording the end). */
  endedAt?: Date;
  outcome: 'running' | 'committed' | 'failed';
  point?: string;
  bytesShipped?: number;
  dataBytes?: number;
  error?: { code: string; message: string };
}

export function recordSyncStart(
  store: StateStore,
  run: { protection: string; kind: SyncKind; checkpoint: string; since: string | null; reason?: string },
): number {
  const result = store.db
    .prepare('INSERT INTO sync_runs (protection, kind, checkpoint, since, reason, started_at_ms) VALUES (?, ?, ?, ?, ?, ?)')
    .run(run.protection, run.kind, run.checkpoint, run.since, run.reason ?? null, Date.now());
  return Number(result.lastInsertRowid);
}

export function recordSyncEnd(
  store: StateStore,
  runId: number,
  end: {
    outcome: 'committed' | 'failed';
    point?: string;
    bytesShipped?: number;
    dataBytes?: number;
    error?: { code: string; message: string };
  },
): void {
  const changed = store.db
    .prepare(
      `UPDATE sync_runs SET ended_at_ms = ?, outcome = ?, point = ?, bytes_shipped = ?, data_bytes = ?, error_code = ?, error_message = ?
       WHERE id = ?`,
    )
    .run(Date.now(), end.outcome, end.point ?? null, end.bytesShipped ?? null, end.dataBytes ?? null, end.error?.code ?? null, end.error?.message ?? null, runId).changes;
  if (changed === 0) throw new SyncRunNotFound(runId);
}

interface RawRun {
  id: number;
  protection: string;
  kind: SyncKind;
  checkpoint: string;
  since: string | null;
  reason: string | null;
  started_at_ms: number;
  ended_at_ms: number | null;
  outcome: 'committed' | 'failed' | null;
  point: string | null;
  bytes_shipped: number | null;
  data_bytes: number | null;
  error_code: string | null;
  error_message: string | null;
}

/** Newest first. */
export function lastSyncRuns(store: StateStore, protection: string, limit: number): SyncRun[] {
  const rows = store.db.prepare('SELECT * FROM sync_runs WHERE protection = ? ORDER BY id DESC LIMIT ?').all(protection, limit) as RawRun[];
  return rows.map(toRun);
}

/** The newest run that committed a point, however many failed since. */
export function lastCommittedRun(store: StateStore, protection: string): SyncRun | undefined {
  const row = store.db.prepare(`SELECT * FROM sync_runs WHERE protection = ? AND outcome = 'committed' ORDER BY id DESC LIMIT 1`).get(protection) as RawRun | undefined;
  return row && toRun(row);
}

function toRun(r: RawRun): SyncRun {
  const run: SyncRun = {
    id: r.id,
    protection: r.protection,
    kind: r.kind,
    checkpoint: r.checkpoint,
    since: r.since,
    startedAt: new Date(r.started_at_ms),
    outcome: r.outcome ?? 'running',
  };
  if (r.reason !== null) run.reason = r.reason;
  if (r.ended_at_ms !== null) run.endedAt = new Date(r.ended_at_ms);
  if (r.point !== null) run.point = r.point;
  if (r.bytes_shipped !== null) run.bytesShipped = r.bytes_shipped;
  if (r.data_bytes !== null) run.dataBytes = r.data_bytes;
  if (r.error_code !== null) run.error = { code: r.error_code, message: r.error_message ?? '' };
  return run;
}
