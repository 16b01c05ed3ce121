/**
 * What the daemon knows of each protection's newest recovery point, fed by its replication loops'
 * cycle reports (and the syncs handed over to it), read whenever someone asks for the lag: the
 * metrics at scrape time, the RPO monitor every few seconds. The lag is measured then, not at the
 * last cycle: when cycles fail or hang, it keeps growing, which is what an RPO alert needs to see.
 *
 * A daemon that starts while the DR site is down has had no cycle yet: it starts from this host's
 * sync history (the start of the last committed run, never later than its point's instant), so a
 * restart does not hide a breach.
 */
import type { StateStore } from '../state/store.js';
import { lastCommittedRun } from '../state/sync-runs.js';
import type { CycleReport } from './continuous.js';
import type { SyncResult } from './sync.js';

interface Known {
  /** The instant the newest point is the state of (ms). */
  pointTime: number;
  /** When this host learnt the point was committed, on its own clock (the DR site's may differ). */
  committedAt: number;
}

export interface ProtectionLag {
  /** Seconds from the newest point's instant to now: the data a failover now would lose. */
  lagSeconds: number;
  /** Seconds since the newest point was committed: how long since replication last made progress. */
  pointAgeSeconds: number;
}

export class ReplicationLag {
  constructor(private readonly now: () => number = Date.now) {}

  readonly #known = new Map<string, Known>();
  /** Why a protection's loop is paused (failed over, source replaced): its lag is then no RPO breach. */
  readonly #paused = new Map<string, string>();
  /** Protections whose loop (or a handed-over sync) reported since this daemon started. */
  readonly #heard = new Set<string>();

  /** Starts each protection from this host's sync history, where it has one. */
  seed(state: StateStore, protections: string[]): void {
    for (const name of protections) {
      const run = lastCommittedRun(state, name);
      if (run && !this.#known.has(name)) this.#known.set(name, { pointTime: run.startedAt.getTime(), committedAt: (run.endedAt ?? run.startedAt).getTime() });
    }
  }

  /** A loop's cycle report (plugin/replication/continuous.ts onCycle). */
  observe(report: CycleReport): void {
    this.#heard.add(report.protection);
    if (report.paused) this.#paused.set(report.protection, report.paused.reason);
    if (report.result) this.synced(report.result);
  }

  /** A committed sync, from a loop or handed over to the daemon by `vmdr sync`. */
  synced(result: SyncResult): void {
    this.#heard.add(result.protection);
    const known = this.#known.get(result.protection);
    const pointTime = result.point.time.getTime();
    // Two syncs of one protection may end out of order: the newest point wins.
    if (!known || pointTime >= known.pointTime) this.#known.set(result.protection, { pointTime, committedAt: this.now() });
    this.#paused.delete(result.protection);
  }

  /** Undefined before the protection's first point. */
  lag(protection: string, now = this.now()): ProtectionLag | undefined {
    const known = this.#known.get(protection);
    if (!known) return undefined;
    return { lagSeconds: Math.max(0, (now - known.pointTime) / 1000), pointAgeSeconds: Math.max(0, (now - known.committedAt) / 1000) };
  }

  paused(protection: string): boolean {
    return this.#paused.has(protection);
  }

  /**
   * Its first cycle since the daemon started has ended (committed, failed or paused): until then
   * the lag is only the history's, and the loop may be about to say the protection is paused.
   */
  heardFrom(protection: string): boolean {
    return this.#heard.has(protection);
  }
}
