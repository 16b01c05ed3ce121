/**
 * One cycle of a consistency group, run by its coordinating site (the source site of its first
 * listed member, coordinatorSite): every member's checkpoint taken inside one short window (crash:
 * the members' VMs paused together; application: their guests' filesystems frozen together), then
 * each member shipped as its own cycle does, its point carrying the group's instant. The group
 * point exists only when every member's point of that instant committed (group-points.ts): a
 * member down, or failing anywhere, leaves the others' points as plain points and the cycle says
 * why (GROUP_MEMBER_DOWN, GROUP_CYCLE_FAILED).
 *
 * The members are driven host by host (group-host.ts): this host's own through its adapter, those
 * of another source site through that site's `vmdr serve` (plugin/sites/group-client.ts), which
 * alone touches its VMs. Each member's own cycle runs to the moment it would begin its backup;
 * once every member on every host has arrived, the window opens: every host holds (pauses or
 * freezes) its members, then every host begins its members' backups, then every host releases
 * them, each step asked of all hosts at once and answered when done. The window closes in every
 * path, at the latest after `pauseTimeout` (a member whose backup began later fails: its
 * checkpoint is outside); each host also ends its own hold by itself after `pauseTimeout`.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { VmdrError } from '../../hypervisors/errors.js';
import { coordinatorSite } from '../config/consistency-groups.js';
import type { Config, ConsistencyGroup, Protection } from '../config/schema.js';
import { isLocalSite, type SiteConnections } from '../sites/connections.js';
import { RemoteHostMembers } from '../sites/group-client.js';
import type { StateStore } from '../state/store.js';
import { recordGroupCycleEnd, recordGroupCycleStart, type GroupCycleRow } from '../state/group-cycles.js';
import { GroupCycleFailed, GroupMemberDown } from './errors.js';
import { errorOf, GroupWindowAborted, HostMembers, type GroupHost, type MemberDown } from './group-host.js';
import { failpoint } from './replica/failpoints.js';
import type { ReceiverClient } from './sender/receiver-client.js';
import type { SyncOptions, SyncResult } from './sync.js';

const MEMBER_DOWN_POLL_MS = 2_000;

export interface GroupCycleResult {
  group: string;
  instant: string;
  consistency: 'crash' | 'application';
  /** From asking the first host's pause (freeze) to the last host's resume (thaw) answer. */
  windowMs: number;
  members: SyncResult[];
  warnings: string[];
}

export interface GroupDeps {
  config: Config;
  file: string;
  sites: SiteConnections;
  state: StateStore;
  /** The receiver client of each member on this host (all on the group's one DR site). */
  receiverOf(p: Protection): ReceiverClient;
}

/** This host is not the group's coordinating site: its cycles are run there. */
export class GroupNotCoordinator extends VmdrError {
  constructor(group: string, coordinator: string, here: string) {
    super('GROUP_NOT_COORDINATOR', `consistency group "${group}" is coordinated by site "${coordinator}" (its first member's source site), and this host is site "${here}"`, {
      subject: { group, site: coordinator },
      remedy: `run \`vmdr sync --group ${group}\` on site "${coordinator}"'s host`,
    });
  }
}

/** A group's cycle runs on its coordinating site only. */
export function requireCoordinator(group: ConsistencyGroup, members: Protection[], config: Config): void {
  const coordinator = coordinatorSite(group, members);
  if (!isLocalSite(config, coordinator)) throw new GroupNotCoordinator(group.name, coordinator, config.localSite!);
}

export async function syncGroup(group: ConsistencyGroup, members: Protection[], deps: GroupDeps, options: Pick<SyncOptions, 'signal' | 'onProgress'> = {}): Promise<GroupCycleResult> {
  requireCoordinator(group, members, deps.config);
  const instant = `${group.name}@${Date.now()}`;
  const hosts = hostsOf(group, members, deps, instant, options);
  const run = recordGroupCycleStart(deps.state, { group: group.name, instant, consistency: group.consistency, members: members.map((p) => p.name) });
  try {
    await waitForMembers(group, hosts, options.signal);
  } catch (err) {
    recordGroupCycleEnd(deps.state, run, { outcome: 'failed', error: errorOf(err) });
    await closeHosts(hosts);
    throw err;
  }
  const warnings: string[] = [];
  let windowMs: number | undefined;
  try {
    // A member that fails before it reaches the window: the others are let go, uncaptured.
    const failedEarly = await Promise.all(hosts.map((h) => h.arrive())).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    if (failedEarly) abortAll(hosts, new GroupWindowAborted(group.name, `a member failed before the window: ${failedEarly.message}`));
    else windowMs = await openWindow(group, hosts, warnings);

    const outcomes = new Map((await Promise.all(hosts.map((h) => h.outcomes()))).flat().map((o) => [o.protection, o]));
    const outcome: GroupCycleRow['members'] = members.map((p) => {
      const o = outcomes.get(p.name);
      return o?.result ? { protection: p.name, point: o.result.point.id } : { protection: p.name, error: o?.error ?? { code: 'INTERNAL', message: 'no outcome' } };
    });
    if (outcome.some((m) => m.error)) {
      const err = new GroupCycleFailed(group.name, outcome, windowMs);
      recordGroupCycleEnd(deps.state, run, { outcome: 'failed', ...(windowMs !== undefined ? { windowMs } : {}), members: outcome, error: { code: err.code, message: err.message } });
      throw err;
    }
    recordGroupCycleEnd(deps.state, run, { outcome: 'committed', windowMs: windowMs!, members: outcome });
    return { group: group.name, instant, consistency: group.consistency, windowMs: windowMs!, members: members.map((p) => outcomes.get(p.name)!.result!), warnings };
  } finally {
    await closeHosts(hosts);
  }
}

/** The members by source site: this host's driven here, another site's through its endpoint. */
function hostsOf(group: ConsistencyGroup, members: Protection[], deps: GroupDeps, instant: string, options: Pick<SyncOptions, 'signal' | 'onProgress'>): GroupHost[] {
  const bySite = new Map<string, Protection[]>();
  for (const p of members) bySite.set(p.source.site, [...(bySite.get(p.source.site) ?? []), p]);
  const several = bySite.size > 1;
  return [...bySite].map(([site, on]) =>
    isLocalSite(deps.config, site)
      ? new HostMembers(group, site, on, deps, instant, options, several ? `site "${site}"` : 'this host')
      : new RemoteHostMembers(group, site, on, { config: deps.config, file: deps.file }, instant, options),
  );
}

/**
 * Holds every host's members, begins every backup, releases every host; the window's length. A
 * member a hold did not take makes the cycle capture nobody; backups not all begun within
 * `pauseTimeout` close the window and fail (their members are outside the instant).
 */
async function openWindow(group: ConsistencyGroup, hosts: GroupHost[], warnings: string[]): Promise<number> {
  const opened = Date.now();
  let released = false;
  const releaseAll = async () => {
    released = true;
    const answers = await Promise.all(hosts.map((h) => h.release().catch((err: unknown) => [`site "${h.site}" did not answer the release (${(err as Error).message}); it resumes its members by itself within pauseTimeout`])));
    warnings.push(...answers.flat());
  };
  try {
    const notHeld = (await Promise.all(hosts.map((h) => h.hold().catch((err: unknown): MemberDown[] => h.members.map((p) => ({ protection: p.name, why: `site "${h.site}" did not hold it (${(err as Error).message})` })))))).flat();
    failpoint('group-window-held');
    if (notHeld.length > 0) {
      // Not one instant without every member: nobody is captured.
      abortAll(hosts, new GroupWindowAborted(group.name, notHeld.map((d) => `member "${d.protection}": ${d.why}`).join('; ')));
      await releaseAll();
      return Date.now() - opened;
    }
    const timedOut = Symbol('timed out');
    const stop = new AbortController();
    const begun = await Promise.race([Promise.all(hosts.map((h) => h.begin().catch(() => undefined))), delay(group.pauseTimeout, timedOut, { signal: stop.signal }).catch(() => timedOut)]);
    stop.abort();
    if (begun === timedOut) abortAll(hosts, new GroupWindowAborted(group.name, `the members' backups did not all begin within ${group.pauseTimeout} ms: the window was closed`));
    await releaseAll();
    return Date.now() - opened;
  } finally {
    if (!released) await releaseAll();
  }
}

function abortAll(hosts: GroupHost[], why: Error): void {
  for (const h of hosts) h.abort(why);
}

async function closeHosts(hosts: GroupHost[]): Promise<void> {
  await Promise.all(hosts.map((h) => (h instanceof RemoteHostMembers ? h.close() : undefined)));
}

/** Waits (onMemberDown: wait) until every member's VM runs on every host, or fails with who is down. */
async function waitForMembers(group: ConsistencyGroup, hosts: GroupHost[], signal?: AbortSignal): Promise<void> {
  const started = Date.now();
  const several = hosts.length > 1;
  for (;;) {
    const down = (
      await Promise.all(hosts.map(async (h) => (await h.down()).map((d) => (several && !d.why.includes(`site "${h.site}"`) ? { ...d, why: `${d.why} on site "${h.site}"` } : d))))
    ).flat();
    if (down.length === 0) return;
    const waited = Date.now() - started;
    if (group.onMemberDown === 'fail') throw new GroupMemberDown(group.name, down);
    if (waited + MEMBER_DOWN_POLL_MS > group.memberDownWait) throw new GroupMemberDown(group.name, down, waited);
    await delay(MEMBER_DOWN_POLL_MS, undefined, { signal });
  }
}
