/**
 * Replication of one protection in a loop: cycles back to back, or one every `intervalMs`. A
 * failed cycle is retried from the same checkpoint after a back-off that grows to 30 s; the loop
 * ends only when its signal aborts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Protection } from '../config/schema.js';
import { syncProtection, type SyncResult } from './sync.js';

type Deps = Parameters<typeof syncProtection>[1];

export interface CycleReport {
  protection: string;
  result?: SyncResult;
  error?: unknown;
  /**
   * Seconds between the newest recovery point this loop knows of and the end of this cycle; after
   * a failed cycle it keeps growing, which is what an RPO alert needs to see.
   */
  lagSeconds?: number;
  /** The lag is past the protection's RPO: the data loss a failover now would cost is too large. */
  rpoBreached?: boolean;
}

/** How long from one cycle's start to the next: back to back for continuous protections, else rpo/2. */
export function cycleInterval(protection: Protection): number {
  return protection.continuous ? 0 : protection.rpo / 2;
}

export async function replicateContinuously(
  protection: Protection,
  deps: Deps,
  options: { signal: AbortSignal; intervalMs: number; onCycle?: (report: CycleReport) => void },
): Promise<void> {
  const { signal } = options;
  let backoff = 1_000;
  let previous: SyncResult | undefined;
  let newest: Date | undefined;
  const lag = () => {
    if (!newest) return {};
    const lagSeconds = (Date.now() - newest.getTime()) / 1000;
    return { lagSeconds, rpoBreached: lagSeconds * 1000 > protection.rpo };
  };
  while (!signal.aborted) {
    const started = Date.now();
    try {
      const result = await syncProtection(protection, deps, { signal, ...(previous ? { previous } : {}) });
      previous = result;
      newest = result.point.time;
      options.onCycle?.({ protection: protection.name, result, ...lag() });
      backoff = 1_000;
      // A shut-off VM's disks do not change: cycling back to back would ship the same
      // pre-shutdown writes again and again. Look again at rpo/2, or sooner if asked.
      const interval = result.offline ? Math.max(options.intervalMs, protection.rpo / 2) : options.intervalMs;
      const pause = Math.max(0, interval - (Date.now() - started));
      if (pause > 0) await sleep(pause, undefined, { signal }).catch(() => undefined);
    } catch (error) {
      previous = undefined;
      if (signal.aborted) break;
      options.onCycle?.({ protection: protection.name, error, ...lag() });
      await sleep(backoff, undefined, { signal }).catch(() => undefined);
      backoff = Math.min(30_000, backoff * 2);
    }
  }
}
