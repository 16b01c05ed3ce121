/**
 * Rows of committed recovery points. The replica store owns their meaning (files, chains); this
 * module only reads and writes the tables, so every query on them lives in one place.
 */
import { preparedOnce, type Database } from './store.js';

export type PointKind = 'full' | 'incremental' | 'resync';

export interface PointDiskRow {
  disk: string;
  /** File name inside the disk's directory. */
  image: string;
  sizeBytes: number;
}

export interface PointRow {
  protection: string;
  seq: number;
  timeMs: number;
  committedAtMs: number;
  checkpoint: string;
  since: string | null;
  kind: PointKind;
  bytesShipped: number;
  dataBytes: number;
  zeroBytes: number;
  pinned: boolean;
  /**
   * The UUID of the source VM this point is of, when the protection was moved onto another VM
   * since (see state/sources.ts): retention keeps the point until the operator releases it.
   * Written only there; absent or null on points of the current source.
   */
  replacedSource?: string | null;
  /** Absent: 'crash' (what every point was before app-consistent points). */
  consistency?: PointConsistencyLevel;
  /** Why crash when application was asked, or what went wrong after the freeze. */
  consistencyIssue?: { code: string; message: string } | null;
  /** From asking the freeze to the thaw's answer. */
  freezeWindowMs?: number | null;
  /** The consistency group instant it was taken in (PointConsistency.groupInstant). */
  groupInstant?: string | null;
  disks: PointDiskRow[];
}

export type PointConsistencyLevel = 'crash' | 'application';

interface RawPoint {
  protection: string;
  seq: number;
  time_ms: number;
  committed_at_ms: number;
  checkpoint: string;
  since: string | null;
  kind: PointKind;
  bytes_shipped: number;
  data_bytes: number;
  zero_bytes: number;
  pinned: number;
  replaced_source: string | null;
  consistency: PointConsistencyLevel;
  consistency_issue: string | null;
  consistency_detail: string | null;
  freeze_window_ms: number | null;
  group_instant: string | null;
}

interface RawDisk {
  seq: number;
  disk: string;
  image: string;
  size_bytes: number;
}

/** Oldest first. */
// Every API read of a protection's points and every status look runs these two.
export function pointRows(db: Database, protection: string): PointRow[] {
  const points = preparedOnce<[string], RawPoint>(db, 'SELECT * FROM recovery_points WHERE protection = ? ORDER BY seq').all(protection);
  const disks = preparedOnce<[string], RawDisk>(db, 'SELECT seq, disk, image, size_bytes FROM recovery_point_disks WHERE protection = ? ORDER BY seq, ord').all(protection);
  const bySeq = new Map<number, PointDiskRow[]>();
  for (const d of disks) {
    const list = bySeq.get(d.seq) ?? [];
    list.push({ disk: d.disk, image: d.image, sizeBytes: d.size_bytes });
    bySeq.set(d.seq, list);
  }
  return points.map((p) => ({
    protection: p.protection,
    seq: p.seq,
    timeMs: p.time_ms,
    committedAtMs: p.committed_at_ms,
    checkpoint: p.checkpoint,
    since: p.since,
    kind: p.kind,
    bytesShipped: p.bytes_shipped,
    dataBytes: p.data_bytes,
    zeroBytes: p.zero_bytes,
    pinned: p.pinned !== 0,
    replacedSource: p.replaced_source,
    consistency: p.consistency,
    consistencyIssue: p.consistency_issue === null ? null : { code: p.consistency_issue, message: p.consistency_detail ?? '' },
    freezeWindowMs: p.freeze_window_ms,
    groupInstant: p.group_instant,
    disks: bySeq.get(p.seq) ?? [],
  }));
}

export function latestSeq(db: Database, protection: string): number {
  const row = db.prepare('SELECT MAX(seq) AS seq FROM recovery_points WHERE protection = ?').get(protection) as { seq: number | null };
  return row.seq ?? 0;
}

export function insertPoint(db: Database, point: PointRow): void {
  db.prepare(
    `INSERT INTO recovery_points (protection, seq, time_ms, committed_at_ms, checkpoint, since, kind,
       bytes_shipped, data_bytes, zero_bytes, pinned, consistency, consistency_issue, consistency_detail, freeze_window_ms, group_instant)
     VALUES (@protection, @seq, @timeMs, @committedAtMs, @checkpoint, @since, @kind, @bytesShipped, @dataBytes, @zeroBytes, @pinned,
       @consistency, @consistencyIssue, @consistencyDetail, @freezeWindowMs, @groupInstant)`,
  ).run({
    protection: point.protection,
    seq: point.seq,
    timeMs: point.timeMs,
    committedAtMs: point.committedAtMs,
    checkpoint: point.checkpoint,
    since: point.since,
    kind: point.kind,
    bytesShipped: point.bytesShipped,
    dataBytes: point.dataBytes,
    zeroBytes: point.zeroBytes,
    pinned: point.pinned ? 1 : 0,
    consistency: point.consistency ?? 'crash',
    consistencyIssue: point.consistencyIssue?.code ?? null,
    consistencyDetail: point.consistencyIssue?.message ?? null,
    freezeWindowMs: point.freezeWindowMs ?? null,
    groupInstant: point.groupInstant ?? null,
  });
  const disk = db.prepare(
    'INSERT INTO recovery_point_disks (protection, seq, disk, image, size_bytes, ord) VALUES (?, ?, ?, ?, ?, ?)',
  );
  point.disks.forEach((d, i) => disk.run(point.protection, point.seq, d.disk, d.image, d.sizeBytes, i));
}

/** Returns whether the point exists. */
export function setPinned(db: Database, protection: string, seq: number, pinned: boolean): boolean {
  return db.prepare('UPDATE recovery_points SET pinned = ? WHERE protection = ? AND seq = ?').run(pinned ? 1 : 0, protection, seq).changes > 0;
}

export function deletePointsBefore(db: Database, protection: string, seq: number): void {
  db.prepare('DELETE FROM recovery_points WHERE protection = ? AND seq < ?').run(protection, seq);
}

export function deletePoints(db: Database, protection: string, seqs: number[]): void {
  const del = db.prepare('DELETE FROM recovery_points WHERE protection = ? AND seq = ?');
  for (const seq of seqs) del.run(protection, seq);
}

export function setDiskImage(db: Database, protection: string, seq: number, disk: string, image: string): void {
  db.prepare('UPDATE recovery_point_disks SET image = ? WHERE protection = ? AND seq = ? AND disk = ?').run(image, protection, seq, disk);
}

/** Every protection with at least one point. */
export function protectionsWithPoints(db: Database): string[] {
  return (db.prepare('SELECT DISTINCT protection FROM recovery_points').all() as { protection: string }[]).map((r) => r.protection);
}
