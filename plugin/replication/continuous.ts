/**
 * Replication of one protection in a loop: cycles back to back, or one every `intervalMs`. A
 * failed cycle is retried from the same checkpoint after a back-off that grows to 30 s; the loop
 * ends only when its signal aborts.
 *
 * A protection that was failed over takes no new recovery point (the receiver refuses the cycle
 * with PROTECTION_FAILED_OVER): the loop says once that replication is paused, raises no RPO
 * alert, and looks again rarely: it reads the role every few seconds where this host's state file
 * holds it (the DR site is here), else it tries one cycle every 30 s. When a failback or a revert
 * gives the replica back, the loop carries on by itself.
 *
 * A protection whose source VM is another machine than the one its points are of (the cycle is
 * refused with SOURCE_IDENTITY_CHANGED before it captures anything) pauses the same way: said
 * once, no RPO alert, one look every 30 s, on by itself after `vmdr protect --replace-source`.
 *
 * A source VM fenced for the failover of another protection of it (fan-out, docs/replication.md)
 * pauses the same way: said once, one look every 30 s, on by itself once that fence is lifted.
 *
 * A failed-over protection's source must not run beside its DR twin: when the loop learns of the
 * failover (the first answer of the DR site after it, which is also the first thing a starting
 * `vmdr serve` asks before it touches the VM), it fences the source VM on this site (plugin/sites/
 * fence.ts) and says so once. In `vmdr serve` the source guard (plugin/sites/source-guard.ts) asks
 * too, replicating or not, and the two share one fence (SourceFences). A failback or a revert
 * lifts the fence before it starts the source.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { unfenceSource } from '../sites/fence.js';
import { SourceFences, type FenceReport } from '../sites/source-fences.js';
import { pauseOf } from '../state/pauses.js';
import { roleOf } from '../state/roles.js';
import { recordedSource } from '../state/sources.js';
import { syncProtection, type SyncResult } from './sync.js';

type Deps = Parameters<typeof syncProtection>[1];

/** How often a paused loop reads the role in this host's state file (no cycle, no receiver call). */
const LOCAL_ROLE_POLL_MS = 5_000;
/** How often a paused loop whose role lives on another host tries a cycle, which the receiver refuses while failed over. */
const FAILED_OVER_RECHECK_MS = 30_000;
/** How often a loop paused for a replaced source VM looks again (a cycle refused before it captures anything). */
const SOURCE_RECHECK_MS = 30_000;

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
  /**
   * Reported once when the loop pauses: the protection is failed over (by `failover`), or its
   * source VM is another machine than the one recorded (`vmdr protect --replace-source` resumes it).
   */
  paused?:
    | { reason: 'failed-over'; failover: string | null }
    | { reason: 'source-replaced'; error: VmdrError }
    | { reason: 'operator'; by: string; at: string }
    | { reason: 'fenced-for-other-copy'; error: VmdrError };
  /** On the first committed cycle after a pause. */
  resumed?: true;
  /** Once per failover: the loop fenced the source VM (it was not fenced yet). */
  fenced?: FenceReport['fenced'];
  /** On resuming after a failover: the fence the loop (or the failover) left on the source was lifted. */
  unfenced?: { vm: string; failover: string };
  /** The source should be fenced and could not be; the loop tries again at its next look. */
  fenceFailed?: FenceReport['fenceFailed'];
}

export { cycleInterval } from '../config/cycle.js';

export async function replicateContinuously(
  protection: Protection,
  deps: Deps,
  options: {
    signal: AbortSignal;
    intervalMs: number;
    onCycle?: (report: CycleReport) => void;
    /** Shared with the daemon's source guard, which fences too: one fence and one event per failover. */
    fences?: SourceFences;
  },
): Promise<void> {
  const { signal } = options;
  let backoff = 1_000;
  let previous: SyncResult | undefined;
  let newest: Date | undefined;
  /** Why the loop is paused, once it said so: said again only when the reason changes. */
  let paused: string | undefined;
  const lag = () => {
    if (!newest) return {};
    const lagSeconds = (Date.now() - newest.getTime()) / 1000;
    return { lagSeconds, rpoBreached: lagSeconds * 1000 > protection.rpo };
  };
  const pause = (why: NonNullable<CycleReport['paused']>) => {
    previous = undefined;
    if (paused !== why.reason) options.onCycle?.({ protection: protection.name, paused: why });
    paused = why.reason;
  };
  /** A fence may be left on the source: at the loop's start (a revert while it was down), and after a failover. */
  let staleFence = true;
  const fences = options.fences ?? new SourceFences(deps.sites);
  const fence = async (failover: string | null, recorded: () => Promise<{ uuid: string } | undefined>) => {
    staleFence = true;
    await fences.fence(protection, failover, recorded, (r) => {
      if (!signal.aborted) options.onCycle?.(r);
    });
  };
  /**
   * The failover is over (a failback or a revert gave the replica back, or this cycle would not
   * have committed): a fence left on the source has done its job. A revert of a failover whose
   * source was off starts nothing, and would otherwise leave it fenced for good. Not started here:
   * whether it runs is the failback's or the revert's, or the operator's, call. Only a fence older
   * than the cycle: one put up while it ran may be a new failover's, whose role has not flipped yet.
   */
  const unfence = async (vm: string, cycleStarted: number) => {
    try {
      const source = await deps.sites.adapter(protection.source.site);
      const lifted = await unfenceSource(source, vm, { protection: protection.name, fencedBefore: new Date(cycleStarted) });
      if (lifted) options.onCycle?.({ protection: protection.name, unfenced: { vm, failover: lifted.failover } });
    } catch (error) {
      // The next pause and resume tries again; replication itself is fine.
      options.onCycle?.({ protection: protection.name, fenceFailed: { vm, failover: null, error, lifting: true } });
    }
  };
  const wait = (ms: number) => sleep(ms, undefined, { signal }).catch(() => undefined);
  while (!signal.aborted) {
    // Where the DR site is this host, its state file says so without a cycle.
    const role = roleOf(deps.state.db, protection.name);
    if (role.role === 'failed-over') {
      pause({ reason: 'failed-over', failover: role.failover });
      await fence(role.failover, async () => {
        const row = recordedSource(deps.state.db, protection.name);
        return row && { uuid: row.vmUuid };
      });
      await wait(LOCAL_ROLE_POLL_MS);
      continue;
    }
    // Paused by an operator (plugin/state/pauses.ts): no cycle until resumed, looked at as often as the role.
    const held = pauseOf(deps.state.db, protection.name);
    if (held) {
      pause({ reason: 'operator', by: held.pausedBy, at: held.pausedAt.toISOString() });
      await wait(LOCAL_ROLE_POLL_MS);
      continue;
    }
    const started = Date.now();
    try {
      const result = await syncProtection(protection, deps, { signal, ...(previous ? { previous } : {}) });
      previous = result;
      newest = result.point.time;
      options.onCycle?.({ protection: protection.name, result, ...lag(), ...(paused ? { resumed: true as const } : {}) });
      if (staleFence) await unfence(result.source.vm, started);
      staleFence = false;
      paused = undefined;
      fences.forget(protection.name);
      backoff = 1_000;
      // A shut-off VM's disks do not change: cycling back to back would ship the same
      // pre-shutdown writes again and again. Look again at rpo/2, or sooner if asked.
      const interval = result.offline ? Math.max(options.intervalMs, protection.rpo / 2) : options.intervalMs;
      const rest = Math.max(0, interval - (Date.now() - started));
      if (rest > 0) await wait(rest);
    } catch (error) {
      previous = undefined;
      if (signal.aborted) break;
      if (error instanceof VmdrError && error.code === 'PROTECTION_FAILED_OVER') {
        const failover = typeof error.subject.failover === 'string' ? error.subject.failover : null;
        pause({ reason: 'failed-over', failover });
        await fence(failover, () => deps.receiver.recordedSource(protection.name));
        // The role lives on the DR host: unless this host's state has it (read above), try again later.
        if (roleOf(deps.state.db, protection.name).role !== 'failed-over') await wait(FAILED_OVER_RECHECK_MS);
        continue;
      }
      if (error instanceof VmdrError && error.code === 'SOURCE_FENCED_FOR_OTHER_COPY') {
        // Another copy of this VM (fan-out) was failed over: this one stops, it does not fight it.
        pause({ reason: 'fenced-for-other-copy', error });
        await wait(SOURCE_RECHECK_MS);
        continue;
      }
      if (error instanceof VmdrError && error.code === 'SOURCE_IDENTITY_CHANGED') {
        // An alert once, not an RPO alert and a failed cycle every time: only the operator can say
        // which machine is the protected one.
        pause({ reason: 'source-replaced', error });
        await wait(SOURCE_RECHECK_MS);
        continue;
      }
      options.onCycle?.({ protection: protection.name, error, ...lag() });
      await wait(backoff);
      backoff = Math.min(30_000, backoff * 2);
    }
  }
}
