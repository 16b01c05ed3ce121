/**
 * Replication paused by an operator: the protection's loop takes no cycle and `vmdr sync` refuses,
 * until it is resumed. Kept in the state file of the host whose loop replicates it (its source site).
 */
import type { Database } from './store.js';

export interface Pause {
  protection: string;
  pausedAt: Date;
  /** Who paused it: a token's name, or the OS user for the CLI. */
  pausedBy: string;
  reason: string | null;
}

/** Pauses it; pausing it again keeps the first pause (its time and who). Returns the pause in force. */
export function pauseProtection(db: Database, protection: string, by: string, reason?: string, now = new Date()): Pause {
  db.prepare('INSERT INTO protection_pauses (protection, paused_at_ms, paused_by, reason) VALUES (?, ?, ?, ?) ON CONFLICT (protection) DO NOTHING').run(
    protection,
    now.getTime(),
    by,
    reason ?? null,
  );
  return pauseOf(db, protection)!;
}

/** Resumes it; false when it was not paused. */
export function resumeProtection(db: Database, protection: string): boolean {
  return db.prepare('DELETE FROM protection_pauses WHERE protection = ?').run(protection).changes > 0;
}

export function pauseOf(db: Database, protection: string): Pause | undefined {
  const r = db.prepare('SELECT paused_at_ms, paused_by, reason FROM protection_pauses WHERE protection = ?').get(protection) as
    | { paused_at_ms: number; paused_by: string; reason: string | null }
    | undefined;
  return r && { protection, pausedAt: new Date(r.paused_at_ms), pausedBy: r.paused_by, reason: r.reason };
}
