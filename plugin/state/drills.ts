/**
 * Rows of the drill history. What a drill does is plugin/drills/'s; this module only reads and
 * writes the table. A row is written when the drill starts (running) and closed once with its
 * verdict, so a drill whose process died is a running row whose process is gone.
 */
import { hostname } from 'node:os';
import { processExists } from './leases.js';
import type { Database } from './store.js';

export type DrillTrigger = 'schedule' | 'manual' | 'api';
export type DrillStatus = 'running' | 'passed' | 'failed' | 'skipped' | 'interrupted';
export type DrillVerdict = Exclude<DrillStatus, 'running'>;

export interface DrillReason {
  code: string;
  message: string;
}

export interface DrillRunRow {
  id: string;
  drill: string;
  plan: string;
  tenant: string | null;
  /** The test failover it ran; null when it never started one (skipped). */
  failover: string | null;
  trigger: DrillTrigger;
  status: DrillStatus;
  startedAtMs: number;
  endedAtMs: number | null;
  reason: DrillReason | null;
  host: string;
  pid: number;
}

/** A row as SQLite has it: the same fields, but its times and its reason in columns of their own. */
type Raw = Omit<DrillRunRow, 'startedAtMs' | 'endedAtMs' | 'reason'> & {
  started_at_ms: number;
  ended_at_ms: number | null;
  reason_code: string | null;
  reason_message: string | null;
};

const row = (r: Raw): DrillRunRow => ({
  id: r.id,
  drill: r.drill,
  plan: r.plan,
  tenant: r.tenant,
  failover: r.failover,
  trigger: r.trigger,
  status: r.status,
  startedAtMs: r.started_at_ms,
  endedAtMs: r.ended_at_ms,
  reason: r.reason_code ? { code: r.reason_code, message: r.reason_message ?? '' } : null,
  host: r.host,
  pid: r.pid,
});

export function insertDrillRun(db: Database, run: Pick<DrillRunRow, 'id' | 'drill' | 'plan' | 'tenant' | 'trigger' | 'startedAtMs'>): DrillRunRow {
  db.prepare(
    `INSERT INTO drill_runs (id, drill, plan, tenant, trigger, status, started_at_ms, host, pid) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)`,
  ).run(run.id, run.drill, run.plan, run.tenant, run.trigger, run.startedAtMs, hostname(), process.pid);
  return getDrillRun(db, run.id)!;
}

/** The test failover the drill runs, as soon as it has an id. */
export function setDrillFailover(db: Database, id: string, failover: string): void {
  db.prepare('UPDATE drill_runs SET failover = ? WHERE id = ?').run(failover, id);
}

/** Closes a running row with its verdict; a row closed already keeps its first one. */
export function endDrillRun(db: Database, id: string, status: DrillVerdict, reason?: DrillReason): DrillRunRow {
  db.prepare(`UPDATE drill_runs SET status = ?, ended_at_ms = ?, reason_code = ?, reason_message = ? WHERE id = ? AND status = 'running'`).run(
    status,
    Date.now(),
    reason?.code ?? null,
    reason?.message ?? null,
    id,
  );
  return getDrillRun(db, id)!;
}

export function getDrillRun(db: Database, id: string): DrillRunRow | undefined {
  const r = db.prepare('SELECT * FROM drill_runs WHERE id = ?').get(id) as Raw | undefined;
  return r && row(r);
}

/** Newest first, at most `limit`; only `tenant`'s when given. */
export function listDrillRuns(db: Database, options: { tenant?: string; limit: number }): DrillRunRow[] {
  const rows = (
    options.tenant === undefined
      ? db.prepare('SELECT * FROM drill_runs ORDER BY started_at_ms DESC, rowid DESC LIMIT ?').all(options.limit)
      : db.prepare('SELECT * FROM drill_runs WHERE tenant = ? ORDER BY started_at_ms DESC, rowid DESC LIMIT ?').all(options.tenant, options.limit)
  ) as Raw[];
  return rows.map(row);
}

/** The drill of `plan` running now in a live process (this one included), if any. */
export function runningDrillOfPlan(db: Database, plan: string): DrillRunRow | undefined {
  const rows = (db.prepare(`SELECT * FROM drill_runs WHERE plan = ? AND status = 'running' ORDER BY started_at_ms`).all(plan) as Raw[]).map(row);
  return rows.find((r) => r.host !== hostname() || processExists(r.pid));
}

/** Running rows of this host whose process is gone: drills interrupted by a crash or a kill. */
export function interruptedDrillRuns(db: Database): DrillRunRow[] {
  const rows = (db.prepare(`SELECT * FROM drill_runs WHERE status = 'running' AND host = ? ORDER BY started_at_ms`).all(hostname()) as Raw[]).map(row);
  return rows.filter((r) => r.pid !== process.pid && !processExists(r.pid));
}
