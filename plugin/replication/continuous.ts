/**
 * Replication in a loop: cycles back to back, or one every `intervalMs`. A failed cycle is retried
 * from the same checkpoint after a back-off that grows to 30 s; the loop ends only when its signal
 * aborts. What a cycle is, is the loop's CycleRunner: one protection's own cycle (sync.ts,
 * `replicateContinuously`), or a consistency group's cycle of all its members at one instant
 * (group-loop.ts). Everything below holds for each protection the cycle captures; a group's loop
 * pauses while any of its members would (its other members are said to be paused for it: no RPO
 * alert either), and reports each member's cycle, lag and RPO as a protection's own loop does.
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
import type { SiteConnections } from '../sites/connections.js';
import { unfenceSource } from '../sites/fence.js';
import { SourceFences, type FenceReport } from '../sites/source-fences.js';
import { pauseOf } from '../state/pauses.js';
import { roleOf } from '../state/roles.js';
import { recordedSource } from '../state/sources.js';
import type { StateStore } from '../state/store.js';
import type { ReceiverClient } from './sender/receiver-client.js';
import { syncProtection, type SyncResult } from './sync.js';

type Deps = Parameters<typeof syncProtection>[1];

/** How often a paused loop reads the role in this host's state file (no cycle, no receiver call). */
const LOCAL_ROLE_POLL_MS = 5_000;
/** How often a paused loop whose role lives on another host tries a cycle, which the receiver refuses while failed over. */
const FAILED_OVER_RECHECK_MS = 30_000;
/** How often a loop paused for a replaced source VM looks again (a cycle refused before it captures anything). */
const SOURCE_RECHECK_MS = 30_000;

/** Why a protection's loop is paused. */
export type PauseReason =
  | { reason: 'failed-over'; failover: string | null }
  | { reason: 'source-replaced'; error: VmdrError }
  | { reason: 'operator'; by: string; at: string }
  | { reason: 'fenced-for-other-copy'; error: VmdrError }
  /** Another member of its consistency group is paused (`member` for `why`): the group's cycles wait for it. */
  | { reason: 'group-member-paused'; group: string; member: string; why: string };

export interface CycleReport {
  protection: string;
  /** The consistency group whose cycle this was (a group's loop). */
  group?: string;
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
  paused?: PauseReason;
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

/** What a loop replicates and how one of its cycles runs. */
export interface CycleRunner {
  /** The protections one cycle captures: the one protection, or the group's members. */
  readonly protections: Protection[];
  /** The consistency group, for a group's loop. */
  readonly group?: string;
  /**
   * One cycle: a committed point of every protection, or it throws. `previous`: the last cycle's
   * results when it committed without a hitch since (a runner may skip what they already tell).
   */
  cycle(signal: AbortSignal, previous: SyncResult[] | undefined): Promise<SyncResult[]>;
  /** The protections' own errors inside a failed cycle's: what may pause the loop. */
  causes(error: unknown): Promise<{ protection: Protection; error: unknown }[]>;
  /** The receiver of a protection's DR site. */
  receiverOf(p: Protection): ReceiverClient;
}

export interface LoopOptions {
  signal: AbortSignal;
  intervalMs: number;
  onCycle?: (report: CycleReport) => void;
  /** Shared with the daemon's source guard, which fences too: one fence and one event per failover. */
  fences?: SourceFences;
}

/** One protection's loop: its own cycles (sync.ts). */
export async function replicateContinuously(protection: Protection, deps: Deps, options: LoopOptions): Promise<void> {
  await runLoop(
    {
      protections: [protection],
      cycle: async (signal, previous) => [await syncProtection(protection, deps, { signal, ...(previous?.[0] ? { previous: previous[0] } : {}) })],
      causes: async (error) => [{ protection, error }],
      receiverOf: () => deps.receiver,
    },
    deps,
    options,
  );
}

/** The loop itself, whatever its cycles capture. */
export async function runLoop(runner: CycleRunner, deps: { sites: SiteConnections; state: StateStore }, options: LoopOptions): Promise<void> {
  const { signal } = options;
  const members = runner.protections;
  const byName = new Map(members.map((p) => [p.name, p]));
  const group = runner.group ? { group: runner.group } : {};
  const report = (r: CycleReport) => options.onCycle?.({ ...r, ...group });
  let backoff = 1_000;
  let previous: SyncResult[] | undefined;
  const newest = new Map<string, Date>();
  /** Why the loop is paused, once it said so: said again only when the reason (or the member) changes. */
  let paused: string | undefined;
  const lag = (p: Protection) => {
    const at = newest.get(p.name);
    if (!at) return {};
    const lagSeconds = (Date.now() - at.getTime()) / 1000;
    return { lagSeconds, rpoBreached: lagSeconds * 1000 > p.rpo };
  };
  /** `member` is paused for `why`; a group's other members are paused for it. */
  const pause = (member: Protection, why: PauseReason) => {
    previous = undefined;
    const key = `${member.name}/${why.reason}`;
    if (paused !== key) {
      report({ protection: member.name, paused: why });
      for (const other of members) {
        if (other !== member) report({ protection: other.name, paused: { reason: 'group-member-paused', group: runner.group ?? '', member: member.name, why: why.reason } });
      }
    }
    paused = key;
  };
  /** A fence may be left on a source: at the loop's start (a revert while it was down), and after a failover. */
  let staleFence = true;
  const fences = options.fences ?? new SourceFences(deps.sites);
  const fence = async (p: Protection, failover: string | null, recorded: () => Promise<{ uuid: string } | undefined>) => {
    staleFence = true;
    await fences.fence(p, failover, recorded, (r) => {
      if (!signal.aborted) report(r);
    });
  };
  const recordedHere = (p: Protection) => async () => {
    const row = recordedSource(deps.state.db, p.name);
    return row && { uuid: row.vmUuid };
  };
  /**
   * The failover is over (a failback or a revert gave the replica back, or this cycle would not
   * have committed): a fence left on the source has done its job. A revert of a failover whose
   * source was off starts nothing, and would otherwise leave it fenced for good. Not started here:
   * whether it runs is the failback's or the revert's, or the operator's, call. Only a fence older
   * than the cycle: one put up while it ran may be a new failover's, whose role has not flipped yet.
   */
  const unfence = async (p: Protection, vm: string, cycleStarted: number) => {
    try {
      const source = await deps.sites.adapter(p.source.site);
      const lifted = await unfenceSource(source, vm, { protection: p.name, fencedBefore: new Date(cycleStarted) });
      if (lifted) report({ protection: p.name, unfenced: { vm, failover: lifted.failover } });
    } catch (error) {
      // The next pause and resume tries again; replication itself is fine.
      report({ protection: p.name, fenceFailed: { vm, failover: null, error, lifting: true } });
    }
  };
  const wait = (ms: number) => sleep(ms, undefined, { signal }).catch(() => undefined);
  while (!signal.aborted) {
    // Where the DR site is this host, its state file says so without a cycle.
    const failedOver = members.flatMap((p) => {
      const role = roleOf(deps.state.db, p.name);
      return role.role === 'failed-over' ? [{ p, failover: role.failover }] : [];
    });
    if (failedOver.length > 0) {
      pause(failedOver[0]!.p, { reason: 'failed-over', failover: failedOver[0]!.failover });
      for (const f of failedOver) await fence(f.p, f.failover, recordedHere(f.p));
      await wait(LOCAL_ROLE_POLL_MS);
      continue;
    }
    // Paused by an operator (plugin/state/pauses.ts): no cycle until resumed, looked at as often as the role.
    const held = members.flatMap((p) => {
      const h = pauseOf(deps.state.db, p.name);
      return h ? [{ p, h }] : [];
    })[0];
    if (held) {
      pause(held.p, { reason: 'operator', by: held.h.pausedBy, at: held.h.pausedAt.toISOString() });
      await wait(LOCAL_ROLE_POLL_MS);
      continue;
    }
    const started = Date.now();
    try {
      const results = await runner.cycle(signal, previous);
      previous = results;
      for (const r of results) newest.set(r.protection, r.point.time);
      for (const r of results) report({ protection: r.protection, result: r, ...lag(byName.get(r.protection)!), ...(paused ? { resumed: true as const } : {}) });
      if (staleFence) for (const r of results) await unfence(byName.get(r.protection)!, r.source.vm, started);
      staleFence = false;
      paused = undefined;
      for (const p of members) fences.forget(p.name);
      backoff = 1_000;
      // A shut-off VM's disks do not change: cycling back to back would ship the same
      // pre-shutdown writes again and again. Look again at rpo/2, or sooner if asked.
      const offline = results.filter((r) => r.offline).map((r) => byName.get(r.protection)!.rpo / 2);
      const interval = offline.length > 0 ? Math.max(options.intervalMs, Math.min(...offline)) : options.intervalMs;
      const rest = Math.max(0, interval - (Date.now() - started));
      if (rest > 0) await wait(rest);
    } catch (error) {
      previous = undefined;
      if (signal.aborted) break;
      const causes = await runner.causes(error).catch(() => []);
      const coded = (code: string) => causes.filter((c) => c.error instanceof VmdrError && c.error.code === code) as { protection: Protection; error: VmdrError }[];
      const refused = coded('PROTECTION_FAILED_OVER');
      if (refused.length > 0) {
        const failoverOf = (e: VmdrError) => (typeof e.subject.failover === 'string' ? e.subject.failover : null);
        pause(refused[0]!.protection, { reason: 'failed-over', failover: failoverOf(refused[0]!.error) });
        for (const r of refused) await fence(r.protection, failoverOf(r.error), () => runner.receiverOf(r.protection).recordedSource(r.protection.name));
        // The role lives on the DR host: unless this host's state has it (read above), try again later.
        if (refused.every((r) => roleOf(deps.state.db, r.protection.name).role !== 'failed-over')) await wait(FAILED_OVER_RECHECK_MS);
        continue;
      }
      const otherCopy = coded('SOURCE_FENCED_FOR_OTHER_COPY')[0];
      if (otherCopy) {
        // Another copy of this VM (fan-out) was failed over: this one stops, it does not fight it.
        pause(otherCopy.protection, { reason: 'fenced-for-other-copy', error: otherCopy.error });
        await wait(SOURCE_RECHECK_MS);
        continue;
      }
      const replaced = coded('SOURCE_IDENTITY_CHANGED')[0];
      if (replaced) {
        // An alert once, not an RPO alert and a failed cycle every time: only the operator can say
        // which machine is the protected one.
        pause(replaced.protection, { reason: 'source-replaced', error: replaced.error });
        await wait(SOURCE_RECHECK_MS);
        continue;
      }
      for (const p of members) report({ protection: p.name, error, ...lag(p) });
      await wait(backoff);
      backoff = Math.min(30_000, backoff * 2);
    }
  }
}
