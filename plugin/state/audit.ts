/**
 * The audit record: who changed what, when, and with what result. Every mutating API call and the
 * CLI's token commands write one. Records are only ever added; reading them is bounded, so an
 * operator's query never loads the whole history.
 */
import { userInfo } from 'node:os';
import { VmdrError } from '../../hypervisors/errors.js';
import type { StateStore } from './store.js';

export type AuditResult = 'ok' | 'refused' | 'failed';

/** The actor of what the CLI does on this host: its OS user is who, not a token. */
export const CLI_ACTOR = 'cli';

/** At most this many records per read. */
export const MAX_AUDIT_LIMIT = 1000;

/**
 * The newest records kept: each refused request of a valid token leaves one, so without a bound a
 * client could grow the state file for as long as it keeps asking. A million records are a few
 * hundred MB at most and years of a provider's changes.
 */
export const AUDIT_RECORDS_KEPT = 1_000_000;
/** The oldest are dropped every this many records, not on each one: one indexed delete in a thousand inserts. */
const PRUNE_EVERY = 1000;

export interface AuditEntry {
  /** A token id, or CLI_ACTOR. */
  actor: string;
  /** The token's name, or the OS user for the CLI. */
  actorName: string;
  /** The tenant the object belongs to (unset: an operator's object). */
  tenant?: string;
  /** What was asked, in the user's words: `token.create`, `protection.sync`, ... */
  action: string;
  /** What it was asked of: a token id, a protection's name, ... */
  object?: string;
  result: AuditResult;
  /** The error code of a refusal or a failure. */
  code?: string;
  /** Default: now. */
  at?: Date;
}

export interface AuditRecord extends Omit<AuditEntry, 'at'> {
  id: number;
  at: Date;
}

interface RawAudit {
  id: number;
  at_ms: number;
  actor: string;
  actor_name: string;
  tenant: string | null;
  action: string;
  object: string | null;
  result: AuditResult;
  code: string | null;
}

export function recordAudit(store: StateStore, entry: AuditEntry, kept = AUDIT_RECORDS_KEPT): number {
  const result = store.db
    .prepare('INSERT INTO audit_records (at_ms, actor, actor_name, tenant, action, object, result, code) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
    .run((entry.at ?? new Date()).getTime(), entry.actor, entry.actorName, entry.tenant ?? null, entry.action, entry.object ?? null, entry.result, entry.code ?? null);
  const id = Number(result.lastInsertRowid);
  if (id % PRUNE_EVERY === 0) store.db.prepare('DELETE FROM audit_records WHERE id <= ?').run(id - kept);
  return id;
}

/**
 * Newest first. `tenant`: that tenant's records only; `since`: records at or after it; `limit` is
 * held to 1..MAX_AUDIT_LIMIT.
 */
export function listAudit(store: StateStore, query: { tenant?: string; since?: Date; limit: number }): AuditRecord[] {
  const limit = Math.min(Math.max(Math.trunc(query.limit) || 1, 1), MAX_AUDIT_LIMIT);
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (query.tenant !== undefined) where.push('tenant = ?'), args.push(query.tenant);
  if (query.since !== undefined) where.push('at_ms >= ?'), args.push(query.since.getTime());
  const rows = store.db
    .prepare<(string | number)[], RawAudit>(
      `SELECT * FROM audit_records ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY at_ms DESC, id DESC LIMIT ${limit}`,
    )
    .all(...args);
  return rows.map((r) => ({
    id: r.id,
    at: new Date(r.at_ms),
    actor: r.actor,
    actorName: r.actor_name,
    ...(r.tenant !== null ? { tenant: r.tenant } : {}),
    action: r.action,
    ...(r.object !== null ? { object: r.object } : {}),
    result: r.result,
    ...(r.code !== null ? { code: r.code } : {}),
  }));
}

/** Who runs this CLI: the OS user (its uid when the system has no name for it). */
export function cliActor(): { actor: string; actorName: string } {
  let actorName: string;
  try {
    actorName = userInfo().username;
  } catch {
    actorName = `uid ${process.getuid?.() ?? 'unknown'}`;
  }
  return { actor: CLI_ACTOR, actorName };
}

/**
 * Runs `work` and records its outcome: `ok`, `refused` (a VmdrError of the user's making, with its
 * code) or `failed` (anything else). The error is thrown on unchanged. What only the result knows
 * (a created token's id, the tenant of a revoked one) comes from `learn`.
 */
export async function audited<T>(
  store: StateStore,
  entry: Omit<AuditEntry, 'result' | 'code' | 'at'>,
  work: () => T | Promise<T>,
  learn?: (result: T) => Pick<AuditEntry, 'object' | 'tenant'>,
): Promise<T> {
  let result: T;
  try {
    result = await work();
  } catch (err) {
    const refused = err instanceof VmdrError && err.userError;
    recordAudit(store, { ...entry, result: refused ? 'refused' : 'failed', code: err instanceof VmdrError ? err.code : 'INTERNAL' });
    throw err;
  }
  recordAudit(store, { ...entry, ...learn?.(result), result: 'ok' });
  return result;
}
