/**
 * The approvals runbooks wait for: a row is written when an approval step starts, and approved by
 * `vmdr runbook resume RUN` (from another process, or the API), which the waiting run sees on its
 * next look. A run killed while it waits finds its row again when resumed.
 */
import type { Database } from './store.js';

export interface Approval {
  failover: string;
  step: string;
  message: string;
  requestedAt: Date;
  approvedAt: Date | null;
  approvedBy: string | null;
}

type Row = { failover: string; step: string; message: string; requested_at_ms: number; approved_at_ms: number | null; approved_by: string | null };
const approval = (r: Row): Approval => ({
  failover: r.failover,
  step: r.step,
  message: r.message,
  requestedAt: new Date(r.requested_at_ms),
  approvedAt: r.approved_at_ms === null ? null : new Date(r.approved_at_ms),
  approvedBy: r.approved_by,
});

/** Asks for it, once: asking again (a resumed run) keeps the first request and any approval given since. */
export function requestApproval(db: Database, failover: string, step: string, message: string): Approval {
  db.prepare('INSERT INTO runbook_approvals (failover, step, message, requested_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (failover, step) DO NOTHING').run(
    failover,
    step,
    message,
    Date.now(),
  );
  return approvalOf(db, failover, step)!;
}

export function approvalOf(db: Database, failover: string, step: string): Approval | undefined {
  const r = db.prepare('SELECT * FROM runbook_approvals WHERE failover = ? AND step = ?').get(failover, step) as Row | undefined;
  return r && approval(r);
}

/** Approves what the run waits for; the approvals given (none when it waits for nothing). */
export function approveWaiting(db: Database, failover: string, by: string): Approval[] {
  const waiting = db.prepare('SELECT * FROM runbook_approvals WHERE failover = ? AND approved_at_ms IS NULL').all(failover) as Row[];
  const now = Date.now();
  const set = db.prepare('UPDATE runbook_approvals SET approved_at_ms = ?, approved_by = ? WHERE failover = ? AND step = ? AND approved_at_ms IS NULL');
  for (const r of waiting) set.run(now, by, failover, r.step);
  return waiting.map((r) => approval({ ...r, approved_at_ms: now, approved_by: by }));
}

/**
 * Takes back what run `failover` waits for (the watch's prepared failover, once its source answers
 * again): nothing is left to approve, and a resumed run asks anew. Returns the steps withdrawn.
 */
export function withdrawWaiting(db: Database, failover: string): string[] {
  const waiting = db.prepare('SELECT step FROM runbook_approvals WHERE failover = ? AND approved_at_ms IS NULL').all(failover) as { step: string }[];
  db.prepare('DELETE FROM runbook_approvals WHERE failover = ? AND approved_at_ms IS NULL').run(failover);
  return waiting.map((r) => r.step);
}
