/**
 * Watches each protection's lag against its RPO, every few seconds rather than at each cycle: a
 * cycle that hangs, or a loop that keeps failing, reports nothing while its lag grows. When the lag
 * passes the RPO it says so once (`rpo-breached`), and once more when a new point brings it back
 * under (`rpo-recovered`): one event per breach, however many checks or cycles it lasts.
 *
 * A paused protection (failed over, or its source VM replaced) is not judged: its lag is on purpose,
 * and the loop raises its own alert. A protection with no point yet is not judged either: its first
 * full sync may rightly take longer than its RPO. Nor is one whose loop has not ended a cycle since
 * the daemon started: its lag is the sync history's, and the loop may be about to say it is paused.
 * A daemon restarted while the DR site is down judges it after its first failed cycle, from that
 * history: the breach is told, not hidden by the restart.
 *
 * It only decides; what an event sets off (a webhook, a metric, a log line) is the caller's.
 */
import type { Protection } from '../config/schema.js';
import type { ReplicationLag } from './lag.js';

export interface RpoEvent {
  event: 'rpo-breached' | 'rpo-recovered';
  protection: string;
  tenant: string | null;
  /** Seconds from the newest point's instant to the check. */
  lag: number;
  /** The protection's RPO in seconds. */
  rpo: number;
  /** ISO 8601: the check that saw it. */
  at: string;
}

/** Checks often enough for a short RPO to be seen breached soon after it is, and not busily. */
export function checkInterval(protections: readonly Protection[]): number {
  const shortest = Math.min(...protections.map((p) => p.rpo));
  return Math.max(1_000, Math.min(5_000, shortest / 2));
}

export class RpoMonitor {
  readonly #breached = new Set<string>();

  constructor(
    private protections: readonly Protection[],
    private readonly lag: ReplicationLag,
    private readonly options: { onEvent: (event: RpoEvent) => void; now?: () => number },
  ) {}

  /** Judges every protection now; returns (and hands to onEvent) the events it raised. */
  check(): RpoEvent[] {
    const now = this.options.now?.() ?? Date.now();
    const events: RpoEvent[] = [];
    for (const p of this.protections) {
      const lag = this.lag.lag(p.name, now);
      if (!lag || !this.lag.heardFrom(p.name) || this.lag.paused(p.name)) continue;
      const over = lag.lagSeconds * 1000 > p.rpo;
      if (over === this.#breached.has(p.name)) continue;
      if (over) this.#breached.add(p.name);
      else this.#breached.delete(p.name);
      events.push({
        event: over ? 'rpo-breached' : 'rpo-recovered',
        protection: p.name,
        tenant: p.tenant ?? null,
        lag: lag.lagSeconds,
        rpo: p.rpo / 1000,
        at: new Date(now).toISOString(),
      });
    }
    for (const e of events) this.options.onEvent(e);
    return events;
  }

  /** The protections judged from now on (a reloaded config); one no longer judged forgets its breach. */
  setProtections(protections: readonly Protection[]): void {
    this.protections = protections;
    const names = new Set(protections.map((p) => p.name));
    for (const name of this.#breached) if (!names.has(name)) this.#breached.delete(name);
  }

  breached(protection: string): boolean {
    return this.#breached.has(protection);
  }

  /** Checks every `intervalMs` until the signal aborts. */
  run(signal: AbortSignal, intervalMs?: number): void {
    if (signal.aborted) return;
    // Without a fixed interval, each wait is set by the protections judged then (they change on reload).
    let timer: NodeJS.Timeout | undefined;
    const next = () => {
      const ms = intervalMs ?? (this.protections.length ? checkInterval(this.protections) : 5_000);
      timer = setTimeout(() => {
        this.check();
        next();
      }, ms);
    };
    next();
    signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  }
}
