/**
 * The watch events: each change of state of a watched source, as the DR site's heartbeats saw it.
 * Only added to; the newest WATCH_EVENTS_KEPT are kept (a source flapping for months must not grow
 * the state file without end), pruned as the audit record is.
 */
import { preparedOnce, type StateStore } from './store.js';

export const WATCH_STATES = ['healthy', 'suspect', 'down', 'failing-over', 'failed-over', 'fenced'] as const;
export type WatchState = (typeof WATCH_STATES)[number];

/** A flapping source leaves two rows a flap: this is years of a fleet's changes, a few tens of MB. */
export const WATCH_EVENTS_KEPT = 100_000;
const PRUNE_EVERY = 1000;

export interface WatchEvent {
  id: number;
  at: Date;
  protection: string;
  /** The source site watched. */
  site: string;
  state: WatchState;
  /** Which check failed and what it said, or what the state change is about. */
  detail: string | null;
}

interface Raw {
  id: number;
  at_ms: number;
  protection: string;
  site: string;
  state: WatchState;
  detail: string | null;
}

const fromRaw = (r: Raw): WatchEvent => ({ id: r.id, at: new Date(r.at_ms), protection: r.protection, site: r.site, state: r.state, detail: r.detail });

export function recordWatchEvent(store: StateStore, event: Omit<WatchEvent, 'id'>, kept = WATCH_EVENTS_KEPT): WatchEvent {
  const result = preparedOnce(store.db, 'INSERT INTO watch_events (at_ms, protection, site, state, detail) VALUES (?, ?, ?, ?, ?)').run(
    event.at.getTime(),
    event.protection,
    event.site,
    event.state,
    event.detail,
  );
  const id = Number(result.lastInsertRowid);
  if (id % PRUNE_EVERY === 0) store.db.prepare('DELETE FROM watch_events WHERE id <= ?').run(id - kept);
  return { id, ...event };
}

/** At most `limit` events after id `after` (all when 0), oldest first; the newest `limit` when `after` is absent. */
export function listWatchEvents(store: StateStore, query: { protection?: string; after?: number; limit: number }): WatchEvent[] {
  const limit = Math.min(Math.max(Math.trunc(query.limit) || 1, 1), 10_000);
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (query.protection !== undefined) where.push('protection = ?'), args.push(query.protection);
  if (query.after !== undefined) where.push('id > ?'), args.push(query.after);
  const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
  const sql =
    query.after !== undefined
      ? `SELECT * FROM watch_events ${clause} ORDER BY id LIMIT ${limit}`
      : `SELECT * FROM (SELECT * FROM watch_events ${clause} ORDER BY id DESC LIMIT ${limit}) ORDER BY id`;
  return store.db.prepare<(string | number)[], Raw>(sql).all(...args).map(fromRaw);
}

/** The newest event of a protection: its watch state now, as this host's state file knows it. */
export function lastWatchEvent(store: StateStore, protection: string): WatchEvent | undefined {
  const row = preparedOnce<[string], Raw>(store.db, 'SELECT * FROM watch_events WHERE protection = ? ORDER BY id DESC LIMIT 1').get(protection);
  return row ? fromRaw(row) : undefined;
}
