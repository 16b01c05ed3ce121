/**
 * After an automatic failover, the watch takes no second automatic action for its protections until
 * an operator clears them (`vmdr watch clear P`, the API): a source that died once and came back
 * (failback) is not failed over by itself again without a person having looked. The hold is read
 * from the state file: the newest failover the watch started automatically, newer than the
 * protection's newest clear (an audit record `watch.clear`).
 */
import type { Protection } from '../config/schema.js';
import { recordAudit } from '../state/audit.js';
import type { StateStore } from '../state/store.js';
import { lastWatchEvent, recordWatchEvent, type WatchEvent } from '../state/watch-events.js';
import { WatchNotHeld } from './errors.js';

export const CLEAR_ACTION = 'watch.clear';

export interface Hold {
  /** The automatic failover that holds the protection. */
  failover: string;
  since: Date;
}

/** The automatic failover that holds `protection`, or undefined when the watch may act on it. */
export function holdOf(state: StateStore, protection: string): Hold | undefined {
  const run = state.db
    .prepare(
      `SELECT f.id, f.started_at_ms FROM failovers f, json_each(f.request, '$.protections') p
       WHERE json_extract(f.request, '$.watch') = 'automatic' AND p.value = ?
       ORDER BY f.started_at_ms DESC LIMIT 1`,
    )
    .get(protection) as { id: string; started_at_ms: number } | undefined;
  if (!run) return undefined;
  const cleared = state.db
    .prepare(`SELECT MAX(at_ms) AS at FROM audit_records WHERE action = ? AND object = ? AND result = 'ok'`)
    .get(CLEAR_ACTION, protection) as { at: number | null };
  if (cleared.at !== null && cleared.at >= run.started_at_ms) return undefined;
  return { failover: run.id, since: new Date(run.started_at_ms) };
}

/**
 * An operator lets the watch act on `protection` again: an audit record (who) and a watch event
 * (what), both in the state file the daemon reads. Refused when nothing holds it.
 */
export function clearHold(state: StateStore, protection: Protection, by: { actor: string; actorName: string }, now = new Date()): WatchEvent {
  const hold = holdOf(state, protection.name);
  if (!hold) throw new WatchNotHeld(protection.name);
  recordAudit(state, { ...by, action: CLEAR_ACTION, object: protection.name, result: 'ok', at: now, ...(protection.tenant ? { tenant: protection.tenant } : {}) });
  const last = lastWatchEvent(state, protection.name);
  return recordWatchEvent(state, {
    at: now,
    protection: protection.name,
    site: protection.source.site,
    state: last?.state ?? 'healthy',
    detail: `cleared by ${by.actorName}: the watch may act again after automatic failover ${hold.failover}`,
  });
}
