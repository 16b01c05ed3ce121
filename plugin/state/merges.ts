/**
 * The journal of an unfinished retention merge: written before any file changes, removed when the
 * DB says the merge is done. One per protection at a time, of either kind: into base (the oldest
 * points go; `plan` is JSON {disk: [overlay file names, oldest first]}) or up into a kept point
 * (points from the middle of the chain go; `plan` is a JSON array of MiddleMergeDisk).
 */
import type { Database } from './store.js';

/** One disk of a middle merge: `top` (the kept point's overlay above) is rebased from `from` onto `onto`, then `drop` go. */
export interface MiddleMergeDisk {
  disk: string;
  /** The overlay of the kept point above the dropped ones; absent when that point lacks the disk or does not read through them. */
  top?: string;
  /** top's backing file before the merge (an overlay of `drop`). */
  from?: string;
  /** top's backing file after it: the kept point's below, or base.qcow2. */
  onto?: string;
  /** The dropped points' overlays of this disk, deleted once top no longer reads through them. */
  drop: string[];
}

interface MergeCommon {
  protection: string;
  /** Into base: the point that ends up held by base.qcow2. Middle: the kept point above the dropped ones. */
  targetSeq: number;
  startedAtMs: number;
}

export type MergeRow = MergeCommon & ({ kind: 'base'; plan: Record<string, string[]> } | { kind: 'middle'; disks: MiddleMergeDisk[] });

export function pendingMerge(db: Database, protection: string): MergeRow | undefined {
  const r = db.prepare('SELECT * FROM replica_merges WHERE protection = ?').get(protection) as
    | { protection: string; target_seq: number; plan: string; started_at_ms: number }
    | undefined;
  if (!r) return undefined;
  const common = { protection: r.protection, targetSeq: r.target_seq, startedAtMs: r.started_at_ms };
  const plan = JSON.parse(r.plan) as Record<string, string[]> | MiddleMergeDisk[];
  return Array.isArray(plan) ? { ...common, kind: 'middle', disks: plan } : { ...common, kind: 'base', plan };
}

export function insertMerge(db: Database, merge: MergeRow): void {
  db.prepare('INSERT INTO replica_merges (protection, target_seq, plan, started_at_ms) VALUES (?, ?, ?, ?)').run(
    merge.protection,
    merge.targetSeq,
    JSON.stringify(merge.kind === 'base' ? merge.plan : merge.disks),
    merge.startedAtMs,
  );
}

/** Every overlay file a merge still needs, as disk/file: recovery must not take them for debris. */
export function mergeFiles(merge: MergeRow): { disk: string; file: string }[] {
  if (merge.kind === 'base') return Object.entries(merge.plan).flatMap(([disk, files]) => files.map((file) => ({ disk, file })));
  return merge.disks.flatMap((d) => d.drop.map((file) => ({ disk: d.disk, file })));
}

export function deleteMerge(db: Database, protection: string): void {
  db.prepare('DELETE FROM replica_merges WHERE protection = ?').run(protection);
}

export function protectionsWithMerges(db: Database): string[] {
  return (db.prepare('SELECT protection FROM replica_merges').all() as { protection: string }[]).map((r) => r.protection);
}
