/**
 * History of consistency group cycles on the host that ran them: each one's instant, how long its
 * members were paused or frozen, and why it gave no group point when it did not (`vmdr status`,
 * the log). The group points themselves are the DR site's (replication/group-points.ts).
 */
import type { StateStore } from './store.js';

export interface GroupCycleRow {
  id: number;
  group: string;
  instant: string;
  startedAt: Date;
  endedAt?: Date;
  outcome: 'running' | 'committed' | 'failed';
  consistency: 'crash' | 'application';
  /** From asking the pause (or freeze) to the last member's resume (or thaw): what it cost the members. */
  windowMs?: number;
  /** By member: its point, or its error. */
  members: { protection: string; point?: string; error?: { code: string; message: string } }[];
  error?: { code: string; message: string };
}

export function recordGroupCycleStart(store: StateStore, cycle: { group: string; instant: string; consistency: 'crash' | 'application'; members: string[] }): number {
  const members = JSON.stringify(cycle.members.map((protection) => ({ protection })));
  const r = store.db
    .prepare("INSERT INTO group_cycles (group_name, instant, started_at_ms, outcome, consistency, members) VALUES (?, ?, ?, 'running', ?, ?)")
    .run(cycle.group, cycle.instant, Date.now(), cycle.consistency, members);
  return Number(r.lastInsertRowid);
}

export function recordGroupCycleEnd(
  store: StateStore,
  id: number,
  end: { outcome: 'committed' | 'failed'; windowMs?: number; members?: GroupCycleRow['members']; error?: { code: string; message: string } },
): void {
  store.db
    .prepare('UPDATE group_cycles SET ended_at_ms = ?, outcome = ?, window_ms = ?, members = COALESCE(?, members), error_code = ?, error_message = ? WHERE id = ?')
    .run(Date.now(), end.outcome, end.windowMs ?? null, end.members ? JSON.stringify(end.members) : null, end.error?.code ?? null, end.error?.message ?? null, id);
}

interface Raw {
  id: number;
  group_name: string;
  instant: string;
  started_at_ms: number;
  ended_at_ms: number | null;
  outcome: GroupCycleRow['outcome'];
  consistency: GroupCycleRow['consistency'];
  window_ms: number | null;
  members: string;
  error_code: string | null;
  error_message: string | null;
}

/** The group's cycles, newest first, at most `limit`. */
export function groupCycles(store: StateStore, group: string, limit = 20): GroupCycleRow[] {
  const rows = store.db.prepare('SELECT * FROM group_cycles WHERE group_name = ? ORDER BY id DESC LIMIT ?').all(group, limit) as Raw[];
  return rows.map((r) => ({
    id: r.id,
    group: r.group_name,
    instant: r.instant,
    startedAt: new Date(r.started_at_ms),
    ...(r.ended_at_ms !== null ? { endedAt: new Date(r.ended_at_ms) } : {}),
    outcome: r.outcome,
    consistency: r.consistency,
    ...(r.window_ms !== null ? { windowMs: r.window_ms } : {}),
    members: JSON.parse(r.members) as GroupCycleRow['members'],
    ...(r.error_code !== null ? { error: { code: r.error_code, message: r.error_message ?? '' } } : {}),
  }));
}
