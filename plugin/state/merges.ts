/** The journal of an unfinished retention merge: written before any file changes, removed when the DB says the merge is done. */
import type { Database } from './store.js';

export interface MergeRow {
  protection: string;
  /** The point that ends up held by base.qcow2. */
  targetSeq: number;
  /** Per disk, the overlay file names to merge into base, oldest first. */
  plan: Record<string, string[]>;
  startedAtMs: number;
}

export function pendingMerge(db: Database, protection: string): MergeRow | undefined {
  const r = db.prepare('SELECT * FROM replica_merges WHERE protection = ?').get(protection) as
    | { protection: string; target_seq: number; plan: string; started_at_ms: number }
    | undefined;
  return r && { protection: r.protection, targetSeq: r.target_seq, plan: JSON.parse(r.plan) as MergeRow['plan'], startedAtMs: r.started_at_ms };
}

export function insertMerge(db: Database, merge: MergeRow): void {
  db.prepare('INSERT INTO replica_merges (protection, target_seq, plan, started_at_ms) VALUES (?, ?, ?, ?)').run(
    merge.protection,
    merge.targetSeq,
    JSON.stringify(merge.plan),
    merge.startedAtMs,
  );
}

export function deleteMerge(db: Database, protection: string): void {
  db.prepare('DELETE FROM replica_merges WHERE protection = ?').run(protection);
}

export function protectionsWithMerges(db: Database): string[] {
  return (db.prepare('SELECT protection FROM replica_merges').all() as { protection: string }[]).map((r) => r.protection);
}
