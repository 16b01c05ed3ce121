/**
 * One cycle of a consistency group, on its members' source host: every member's checkpoint taken
 * inside one short window (crash: the members' VMs paused together; application: their guests'
 * filesystems frozen together), then each member shipped as its own cycle does, its point carrying
 * the group's instant. The group point exists only when every member's point of that instant
 * committed (group-points.ts): a member down, or failing anywhere, leaves the others' points as
 * plain points and the cycle says why (GROUP_MEMBER_DOWN, GROUP_CYCLE_FAILED).
 *
 * How a member joins the window: its own cycle (sync.ts) runs to the moment it would begin its
 * backup, then hands that call to `capture`; once every member has arrived, the window opens,
 * every call runs at once, and the window closes, in every path and at the latest after
 * `pauseTimeout` (a member whose backup began later than that fails: its checkpoint is outside).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { BackupSession, QuiesceResult } from '../../hypervisors/types.js';
import { Unsupported, VmdrError } from '../../hypervisors/errors.js';
import type { ConsistencyGroup, Protection } from '../config/schema.js';
import type { SiteConnections } from '../sites/connections.js';
import type { StateStore } from '../state/store.js';
import { recordGroupCycleEnd, recordGroupCycleStart, type GroupCycleRow } from '../state/group-cycles.js';
import { GroupCycleFailed, GroupMemberDown } from './errors.js';
import type { ReceiverClient } from './sender/receiver-client.js';
import { syncProtection, type SyncOptions, type SyncResult } from './sync.js';

const MEMBER_DOWN_POLL_MS = 2_000;

export interface GroupCycleResult {
  group: string;
  instant: string;
  consistency: 'crash' | 'application';
  /** From asking the pause (freeze) of the first member to the last member's resume (thaw). */
  windowMs: number;
  members: SyncResult[];
  warnings: string[];
}

export interface GroupDeps {
  sites: SiteConnections;
  state: StateStore;
  /** The receiver client of each member (all on the group's one DR site). */
  receiverOf(p: Protection): ReceiverClient;
}

type Arrival = { protection: Protection; begin: () => Promise<BackupSession>; resolve: (s: BackupSession) => void; reject: (e: unknown) => void };

/** Aborts a member waiting in the window when another member cannot come. */
class GroupWindowAborted extends VmdrError {
  constructor(group: string, why: string) {
    super('GROUP_WINDOW_ABORTED', `consistency group "${group}": not captured: ${why}`, { subject: { group } });
  }
}

export async function syncGroup(group: ConsistencyGroup, members: Protection[], deps: GroupDeps, options: Pick<SyncOptions, 'signal' | 'onProgress'> = {}): Promise<GroupCycleResult> {
  const site = members[0]!.source.site;
  const source = await deps.sites.adapter(site);
  const tracker = source.changeTracker;
  if (!tracker) throw new Unsupported('changed-block tracking', source.uri);
  const vms = members.map((p) => p.source.vm);

  const instant = `${group.name}@${Date.now()}`;
  const run = recordGroupCycleStart(deps.state, { group: group.name, instant, consistency: group.consistency, members: members.map((p) => p.name) });
  try {
    await waitForMembers(group, members, (vm) => source.powerState(vm), options.signal);
  } catch (err) {
    recordGroupCycleEnd(deps.state, run, { outcome: 'failed', error: errorOf(err) });
    throw err;
  }
  const arrivals: Arrival[] = [];
  let aborted: GroupWindowAborted | undefined;
  let allArrived!: () => void;
  const arrived = new Promise<void>((resolve) => (allArrived = resolve));
  const capture = (protection: Protection) => (begin: () => Promise<BackupSession>) =>
    new Promise<BackupSession>((resolve, reject) => {
      if (aborted) return reject(aborted);
      arrivals.push({ protection, begin, resolve, reject });
      if (arrivals.length === members.length) allArrived();
    });
  const runs = members.map((p) =>
    syncProtection(p, { sites: deps.sites, state: deps.state, receiver: deps.receiverOf(p) }, { ...options, group: { instant, capture: capture(p) } }),
  );
  // A member that fails before it reaches the window: the others are let go, uncaptured.
  const firstFailure = Promise.race(runs.map((r) => r.then(() => new Promise<never>(() => undefined), (err: unknown) => err)));
  const warnings: string[] = [];
  let windowMs: number | undefined;
  const cameFirst = await Promise.race([arrived.then(() => undefined), firstFailure]);
  if (cameFirst !== undefined) {
    aborted = new GroupWindowAborted(group.name, `a member failed before the window: ${(cameFirst as Error).message}`);
    for (const a of arrivals) a.reject(aborted);
  } else {
    windowMs = await openWindow(group, arrivals, tracker, vms, warnings);
  }

  const settled = await Promise.allSettled(runs);
  const outcome: GroupCycleRow['members'] = settled.map((s, i) =>
    s.status === 'fulfilled'
      ? { protection: members[i]!.name, point: s.value.point.id }
      : { protection: members[i]!.name, error: errorOf(s.reason) },
  );
  if (outcome.some((m) => m.error)) {
    const causes = new Map(settled.flatMap((s, i) => (s.status === 'rejected' ? [[members[i]!.name, s.reason as unknown] as const] : [])));
    const err = new GroupCycleFailed(group.name, outcome, windowMs, causes);
    recordGroupCycleEnd(deps.state, run, { outcome: 'failed', ...(windowMs !== undefined ? { windowMs } : {}), members: outcome, error: { code: err.code, message: err.message } });
    throw err;
  }
  recordGroupCycleEnd(deps.state, run, { outcome: 'committed', windowMs: windowMs!, members: outcome });
  const results = settled.map((s) => (s as PromiseFulfilledResult<SyncResult>).value);
  return { group: group.name, instant, consistency: group.consistency, windowMs: windowMs!, members: results, warnings };
}

/**
 * Pause (freeze) every member, begin every member's backup, resume (thaw) every member; the
 * window's length. A member the pause or freeze did not take, or whose backup did not begin within
 * `pauseTimeout`, fails (and so the group point); the others go on with their own points.
 */
async function openWindow(
  group: ConsistencyGroup,
  arrivals: Arrival[],
  tracker: NonNullable<Awaited<ReturnType<SiteConnections['adapter']>>['changeTracker']>,
  vms: string[],
  warnings: string[],
): Promise<number> {
  const opened = Date.now();
  const bound = { timeoutMs: group.pauseTimeout };
  const hold =
    group.consistency === 'application'
      ? await tracker.freezeGuests(vms, bound).then((f) => ({ held: new Set(f.frozen), close: async () => f.thaw() }))
      : await tracker.pauseVms(vms, bound).then((p) => ({ held: new Set(p.paused), refused: p.refused, close: async () => p.resume() }));
  const notHeld = arrivals.filter((a) => !hold.held.has(a.protection.source.vm));
  let closed: Map<string, QuiesceResult | { pausedMs: number; error?: string }> | undefined;
  try {
    if (notHeld.length > 0) {
      // Not one instant without every member: nobody is captured.
      const why = notHeld.map((a) => `VM ${JSON.stringify(a.protection.source.vm)} was not ${group.consistency === 'application' ? 'frozen' : `paused (${('refused' in hold && hold.refused?.get(a.protection.source.vm)) || 'not running'})`}`).join('; ');
      closed = await hold.close();
      const err = new GroupWindowAborted(group.name, why);
      for (const a of arrivals) a.reject(err);
      return Date.now() - opened;
    }
    const begun = arrivals.map((a) => a.begin().then((s) => ({ ok: true as const, s }), (e: unknown) => ({ ok: false as const, e })));
    const timedOut = Symbol('timed out');
    const stop = new AbortController();
    const all = await Promise.race([Promise.all(begun), delay(group.pauseTimeout, timedOut, { signal: stop.signal }).catch(() => timedOut)]);
    stop.abort();
    closed = await hold.close();
    const windowMs = Date.now() - opened;
    if (typeof all === 'symbol') {
      const late = new GroupWindowAborted(group.name, `the members' backups did not all begin within ${group.pauseTimeout} ms: the window was closed`);
      begun.forEach((b, i) =>
        void b.then((r) => {
          if (r.ok) void r.s.end().catch(() => undefined);
          arrivals[i]!.reject(late);
        }),
      );
      return windowMs;
    }
    all.forEach((r, i) => {
      const a = arrivals[i]!;
      if (!r.ok) return a.reject(r.e);
      const q = closed!.get(a.protection.source.vm);
      a.resolve(q && 'consistency' in q ? { ...r.s, quiesce: q } : r.s);
    });
    for (const c of closed.values()) if ('error' in c && c.error) warnings.push(c.error);
    return windowMs;
  } finally {
    if (!closed) await hold.close();
  }
}

/** Waits (onMemberDown: wait) until every member's VM runs, or fails with who is down. */
async function waitForMembers(group: ConsistencyGroup, members: Protection[], stateOf: (vm: string) => Promise<string>, signal?: AbortSignal): Promise<void> {
  const started = Date.now();
  for (;;) {
    const down = (
      await Promise.all(
        members.map(async (p) => {
          const state = await stateOf(p.source.vm).catch((err: unknown) => `unreachable (${(err as Error).message})`);
          return state === 'running' ? [] : [{ protection: p.name, why: `VM ${JSON.stringify(p.source.vm)} is ${state}` }];
        }),
      )
    ).flat();
    if (down.length === 0) return;
    const waited = Date.now() - started;
    if (group.onMemberDown === 'fail') throw new GroupMemberDown(group.name, down);
    if (waited + MEMBER_DOWN_POLL_MS > group.memberDownWait) throw new GroupMemberDown(group.name, down, waited);
    await delay(MEMBER_DOWN_POLL_MS, undefined, { signal });
  }
}

function errorOf(err: unknown): { code: string; message: string } {
  return err instanceof VmdrError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: String((err as Error)?.message ?? err) };
}
