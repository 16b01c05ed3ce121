/**
 * Rows of failovers and their steps. The runner (plugin/failover/) owns what a step means; this
 * module only reads and writes the tables. Every step is written before it starts and after it
 * ends, so a run killed half way says exactly where it stopped.
 */
import { hostname } from 'node:os';
import { processExists } from './leases.js';
import { preparedOnce, type Database } from './store.js';

export type FailoverKind = 'unplanned' | 'planned' | 'test' | 'revert' | 'failback';
export type FailoverStatus = 'running' | 'succeeded' | 'failed';
export type StepStatus = 'started' | 'done' | 'failed' | 'skipped';

export interface FailoverRow {
  id: string;
  kind: FailoverKind;
  plan: string | null;
  /** What was asked for, as JSON: enough to resume it. */
  request: string;
  status: FailoverStatus;
  startedAtMs: number;
  endedAtMs: number | null;
  failureAtMs: number;
  errorCode: string | null;
  errorMessage: string | null;
}

export interface StepRow {
  protection: string;
  step: string;
  ord: number;
  status: StepStatus;
  startedAtMs: number;
  endedAtMs: number | null;
  detail: string | null;
  errorCode: string | null;
  errorMessage: string | null;
}

export interface LockRow {
  protection: string;
  failover: string;
  host: string;
  pid: number;
}

const camel = (row: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(row).map(([k, v]) => [k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()), v]));

export function insertFailover(db: Database, row: Omit<FailoverRow, 'status' | 'endedAtMs' | 'errorCode' | 'errorMessage'>): void {
  db.prepare(
    `INSERT INTO failovers (id, kind, plan, request, status, started_at_ms, failure_at_ms) VALUES (?, ?, ?, ?, 'running', ?, ?)`,
  ).run(row.id, row.kind, row.plan, row.request, row.startedAtMs, row.failureAtMs);
}

export function getFailover(db: Database, id: string): FailoverRow | undefined {
  const r = db.prepare('SELECT * FROM failovers WHERE id = ?').get(id) as Record<string, unknown> | undefined;
  return r && (camel(r) as unknown as FailoverRow);
}

/** The newest runs first, at most `limit`. */
export function listFailovers(db: Database, limit: number): FailoverRow[] {
  return (db.prepare('SELECT * FROM failovers ORDER BY started_at_ms DESC LIMIT ?').all(limit) as Record<string, unknown>[]).map((r) => camel(r) as unknown as FailoverRow);
}

export function endFailover(db: Database, id: string, status: 'succeeded' | 'failed', error?: { code: string; message: string }): void {
  db.prepare('UPDATE failovers SET status = ?, ended_at_ms = ?, error_code = ?, error_message = ? WHERE id = ?').run(
    status,
    Date.now(),
    error?.code ?? null,
    error?.message ?? null,
    id,
  );
}

/** A run that was still running when its process died, or failed: what --resume continues. */
export function reopenFailover(db: Database, id: string): void {
  db.prepare(`UPDATE failovers SET status = 'running', ended_at_ms = NULL, error_code = NULL, error_message = NULL WHERE id = ?`).run(id);
}

export function listSteps(db: Database, failover: string): StepRow[] {
  return (db.prepare('SELECT * FROM failover_steps WHERE failover = ? ORDER BY ord').all(failover) as Record<string, unknown>[]).map(
    (r) => camel(r) as unknown as StepRow,
  );
}

/** The step's row once it is done (a resumed run skips it). */
export function doneStep(db: Database, failover: string, protection: string, step: string): StepRow | undefined {
  const r = preparedOnce(db, `SELECT * FROM failover_steps WHERE failover = ? AND protection = ? AND step = ? AND status = 'done'`).get(failover, protection, step) as
    | Record<string, unknown>
    | undefined;
  return r && (camel(r) as unknown as StepRow);
}

// A plan's run writes two rows per step and VM (tens per VM): its statements are prepared once.
export function startStep(db: Database, failover: string, protection: string, step: string): void {
  preparedOnce(
    db,
    `INSERT INTO failover_steps (failover, protection, step, ord, status, started_at_ms)
     VALUES (?, ?, ?, (SELECT COALESCE(MAX(ord), 0) + 1 FROM failover_steps WHERE failover = ?), 'started', ?)
     ON CONFLICT (failover, protection, step) DO UPDATE SET status = 'started', started_at_ms = excluded.started_at_ms,
       ended_at_ms = NULL, error_code = NULL, error_message = NULL`,
  ).run(failover, protection, step, failover, Date.now());
}

export function endStep(
  db: Database,
  failover: string,
  protection: string,
  step: string,
  status: Exclude<StepStatus, 'started'>,
  outcome: { detail?: unknown; error?: { code: string; message: string } } = {},
): void {
  preparedOnce(
    db,
    `UPDATE failover_steps SET status = ?, ended_at_ms = ?, detail = ?, error_code = ?, error_message = ?
     WHERE failover = ? AND protection = ? AND step = ?`,
  ).run(
    status,
    Date.now(),
    outcome.detail === undefined ? null : JSON.stringify(outcome.detail),
    outcome.error?.code ?? null,
    outcome.error?.message ?? null,
    failover,
    protection,
    step,
  );
}

/**
 * Takes every protection for `failover`, or none: a protection whose lock is held by a live
 * process (even of this same run: a resume while it still runs), or by another run that died and
 * was not resumed, is returned instead.
 */
export function tryLockProtections(db: Database, failover: string, protections: string[]): { locked: true } | { locked: false; heldBy: LockRow; live: boolean } {
  return db
    .transaction(() => {
      for (const protection of protections) {
        const held = db.prepare('SELECT * FROM failover_locks WHERE protection = ?').get(protection) as LockRow | undefined;
        if (!held) continue;
        const ours = held.host === hostname() && held.pid === process.pid;
        const live = !ours && (held.host !== hostname() || processExists(held.pid));
        // A run is taken over (resumed) only from a process that is gone.
        if (held.failover === failover && !live) continue;
        return { locked: false as const, heldBy: held, live };
      }
      const insert = db.prepare(
        `INSERT INTO failover_locks (protection, failover, host, pid) VALUES (?, ?, ?, ?)
         ON CONFLICT (protection) DO UPDATE SET host = excluded.host, pid = excluded.pid`,
      );
      for (const protection of protections) insert.run(protection, failover, hostname(), process.pid);
      return { locked: true as const };
    })
    .immediate();
}

/** The run that holds `protection`'s lock, if one does. */
export function lockHolder(db: Database, protection: string): string | undefined {
  return (db.prepare('SELECT failover FROM failover_locks WHERE protection = ?').get(protection) as { failover: string } | undefined)?.failover;
}

export function unlockProtections(db: Database, failover: string): void {
  db.prepare('DELETE FROM failover_locks WHERE failover = ?').run(failover);
}

/**
 * The newest run of `protection` (or plan) that still holds its protections: a run that died, or
 * a real failover that failed. What --resume picks up.
 */
export function unfinishedFailover(db: Database, match: { protection?: string; plan?: string }): FailoverRow | undefined {
  const r = (
    match.plan
      ? db
          .prepare(
            `SELECT DISTINCT f.* FROM failovers f JOIN failover_locks l ON l.failover = f.id WHERE f.plan = ? ORDER BY f.started_at_ms DESC LIMIT 1`,
          )
          .get(match.plan)
      : db
          .prepare(`SELECT f.* FROM failovers f JOIN failover_locks l ON l.failover = f.id WHERE l.protection = ? ORDER BY f.started_at_ms DESC LIMIT 1`)
          .get(match.protection)
  ) as Record<string, unknown> | undefined;
  return r && (camel(r) as unknown as FailoverRow);
}
