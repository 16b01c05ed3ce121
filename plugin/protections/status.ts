/**
 * What `vmdr status` reports for each protection: where its source and target VMs are and what
 * power state they are in, its newest recovery point and the lag behind the source (now minus the
 * instant that point is the state of), and its last sync. A site that cannot be reached is reported
 * per row, not thrown: status is what an operator runs when things are already broken. Recovery
 * points come from this host's state file where the DR storage is, else from the site's receiver;
 * a receiver that cannot be reached is a per-row problem too. The last sync is this host's history.
 *
 * The role (replicating, or failed over by which run onto which point) is the replica's, kept in the
 * state file of the DR host: read there when that is this host; elsewhere it is known only when this
 * host's last sync was refused because the protection is failed over. The lag of a failed-over
 * protection is not an RPO breach: replication is paused on purpose.
 *
 * Drift: the target's disks against the source's (one missing, of another size, or the source's no
 * longer), what `vmdr target provision` fixes before a failover needs it. A failed-over target
 * runs on a recovery point's overlays, so it is not compared.
 *
 * The source's identity is checked against the one the DR site recorded for the protection's
 * points (from this host's state file or the receiver, as the points): another machine under the
 * source's name is flagged (its syncs are refused), and so is the recorded VM found under another name.
 *
 * A source VM a failover fenced (plugin/sites/fence.ts) is shown so, from its own labels: that is
 * known on the source's site even when the DR site, which holds the role, cannot be reached.
 *
 * The bandwidth limit in force is the sender's (plugin/replication/bandwidth/in-force.ts), read on
 * this host's clock: which of the protection's own and its site link's holds, and the next change.
 *
 * A consistency group's member carries its group's status: the newest group point (from the
 * members' points, as failover reads them), the last group cycle this host ran (its history: the
 * coordinating site's), the window of the last cycle that paused its members, the oldest member's lag.
 */
import type { PowerState, VmInfo } from '../../hypervisors/types.js';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config, ConsistencyGroup, Protection } from '../config/schema.js';
import { groupPoints } from '../replication/group-points.js';
import { groupCycles } from '../state/group-cycles.js';
import type { RecoveryPoint, ReplicaSpace } from '../replication/replica/store.js';
import type { SiteConnections } from '../sites/connections.js';
import { recoveryPointsAndSpace } from '../replication/points.js';
import { pauseOf } from '../state/pauses.js';
import { roleOf, type ProtectionRole } from '../state/roles.js';
import { resolveSource } from './source-identity.js';
import { sourceSiteFor, sourceVmLookup } from '../sites/source-site-for.js';
import { recordedSourceOf } from './source-record.js';
import type { StateStore } from '../state/store.js';
import { lastSyncRuns, type SyncRun } from '../state/sync-runs.js';
import { fenceOf as fenceMarkOf } from '../sites/fence.js';
import { targetDrift, type DiskDrift } from '../targets/drift.js';
import { lastWatchEvent, type WatchState } from '../state/watch-events.js';
import { watchOf } from '../watch/watched.js';
import { bandwidthsInForce, type BandwidthInForce } from '../replication/bandwidth/in-force.js';

export interface VmState {
  site: string;
  vm: string;
  state: PowerState | 'missing' | 'unreachable';
  problem?: string;
  /** The source only: the fence a failover put on it (read from its labels), null when it has none. */
  fenced?: { failover: string; fencedAt: string } | null;
}

export interface ProtectionStatus {
  protection: string;
  tenant: string | null;
  rpoSeconds: number;
  /** The bandwidth limit its cycles are held to now (its own or its DR site link's, the tighter), and when that next changes. */
  bandwidth: BandwidthInForce;
  source: VmState;
  target: VmState;
  /** The replica's role; null when this host cannot know it (the DR state file is elsewhere). */
  role: ProtectionRole | null;
  /** For a failed-over protection: the run that did it and the point its target booted (null where not known). */
  failover: { id: string | null; point: string | null } | null;
  lastPoint: { id: string; time: string } | null;
  /** Why the newest point could not be known (receiver unreachable, no storage configured). */
  pointsProblem: string | null;
  /** Bytes the replica occupies on the DR site, every file of it (what `du` counts); null where not known. */
  space: { bytes: number } | null;
  /** Seconds since the instant of the newest recovery point; null before the first one. */
  lagSeconds: number | null;
  /** True when the lag is past the RPO, unless the protection is failed over. */
  rpoBreached: boolean;
  lastSync: { outcome: string; kind: string; reason: string | null; startedAt: string; endedAt: string | null; error: string | null } | null;
  /** Paused by an operator on this host (its loop takes no cycle): who, since when, why. */
  paused: { by: string; at: string; reason: string | null } | null;
  /** How the target's disks differ from the source's (empty: none); null when not compared (a VM unreadable, failed over). */
  drift: DiskDrift[] | null;
  sourceIdentity: SourceIdentityStatus;
  /** The watch on the source (null: not watched): its last state from this host's state file (null before the DR site's first beat, or on another host). */
  watch: { policy: string; plan: string | null; state: WatchState | null; since: string | null; detail: string | null } | null;
  /** The consistency group the protection is a member of (null: none), the same for each member. */
  consistencyGroup: GroupStatus | null;
}

/** A consistency group as `vmdr status` shows it (the API's `groups`). */
export interface GroupStatus {
  group: string;
  members: string[];
  consistency: 'crash' | 'application';
  /**
   * The newest group point (every member has a committed point of its instant): its id (what
   * `--point` names), its time (its members' newest) and age; null before the first, or where a
   * member's points cannot be read.
   */
  lastGroupPoint: { id: string; time: string; ageSeconds: number } | null;
  /** The newest group cycle this host ran that ended (the coordinating site's history); null where none. */
  lastCycle: { instant: string; outcome: 'committed' | 'failed'; startedAt: string; endedAt: string | null; windowMs: number | null; error: string | null } | null;
  /** A group cycle runs on this host now. */
  cycleRunning: boolean;
  /** How long the members were paused (frozen) in the last cycle that opened its window; null before. */
  windowMs: number | null;
  /** The oldest member's lag (the largest): what a failover of the group now loses at most; null while a member has no point. */
  lagSeconds: number | null;
}

/** The source VM against the identity (UUID) the DR site recorded for the protection's points. */
export interface SourceIdentityStatus {
  /** Null before the first protect or sync recorded one, or when the DR site cannot be asked. */
  recorded: string | null;
  /** The UUID of the VM now under the config's name (or of the recorded VM, renamed); null when missing. */
  current: string | null;
  /** Another machine is under the source's name: its syncs are refused until `vmdr protect --replace-source`. */
  replaced: boolean;
  /** The config's name is gone and the recorded VM is named this now (syncs follow it). */
  renamedTo: string | null;
  /** Why it could not be checked (receiver or hypervisor unreachable). */
  problem: string | null;
}

export async function protectionStatus(
  ctx: { config: Config; file: string; sites: SiteConnections; state: StateStore },
  now = new Date(),
): Promise<ProtectionStatus[]> {
  const { config, sites, state } = ctx;
  /** Each protection's points, where they could be read: what its group's points are made of. */
  const pointsOf = new Map<string, RecoveryPoint[]>();
  const bandwidthOf = bandwidthsInForce(config, now);
  const rows: ProtectionStatus[] = await Promise.all(
    config.protections.map(async (p) => {
      const { points, problem, space } = await newestPoint(ctx, p);
      if (points) pointsOf.set(p.name, points);
      const latest = points?.at(-1);
      const lag = latest ? Math.max(0, (now.getTime() - latest.time.getTime()) / 1000) : null;
      const run = lastSyncRuns(state, p.name, 1)[0];
      const { role, failover } = roleHere(ctx, p, run);
      const sourceIdentity = await identityOf(ctx, p);
      // Each VM is read once: its power state and its disks (for the drift) come from one answer.
      const [source, target] = await Promise.all([
        readVm(p.source.site, p.source.vm, () => sourceSiteFor(ctx, p).vm(p)),
        readVm(p.target.site, p.target.vm, async () => (await sites.adapter(p.target.site)).getVm(p.target.vm)),
      ]);
      return {
        protection: p.name,
        tenant: p.tenant ?? null,
        rpoSeconds: p.rpo / 1000,
        bandwidth: bandwidthOf(p),
        source: { ...source.state, fenced: fenceOf(source.info) },
        target: target.state,
        role,
        failover,
        lastPoint: latest ? { id: latest.id, time: latest.time.toISOString() } : null,
        pointsProblem: problem ?? null,
        space: space ? { bytes: space.totalBytes } : null,
        lagSeconds: lag,
        rpoBreached: role !== 'failed-over' && (lag === null || lag * 1000 > p.rpo),
        lastSync: run
          ? {
              outcome: run.outcome,
              kind: run.kind,
              reason: run.reason ?? null,
              startedAt: run.startedAt.toISOString(),
              endedAt: run.endedAt?.toISOString() ?? null,
              error: run.error ? `${run.error.code}: ${run.error.message}` : null,
            }
          : null,
        paused: pausedHere(state, p.name),
        drift: role === 'failed-over' || !source.info || !target.info ? null : targetDrift(source.info, target.info),
        sourceIdentity,
        watch: watchHere(config, state, p),
        consistencyGroup: null,
      };
    }),
  );
  for (const group of config.consistencyGroups) {
    const status = groupStatus(group, rows, pointsOf, state, now);
    for (const r of rows) if (group.protections.includes(r.protection)) r.consistencyGroup = status;
  }
  return rows;
}

/** The consistency groups of `rows` (their members' `consistencyGroup`), once each. */
export function groupsOf(rows: readonly ProtectionStatus[]): GroupStatus[] {
  return [...new Map(rows.flatMap((r) => (r.consistencyGroup ? [[r.consistencyGroup.group, r.consistencyGroup] as const] : []))).values()];
}

function groupStatus(group: ConsistencyGroup, rows: ProtectionStatus[], pointsOf: Map<string, RecoveryPoint[]>, state: StateStore, now: Date): GroupStatus {
  const complete = group.protections.every((m) => pointsOf.has(m));
  const newest = complete ? groupPoints(group, (m) => pointsOf.get(m)!).at(-1) : undefined;
  const cycles = groupCycles(state, group.name, 20);
  const ended = cycles.find((c) => c.outcome !== 'running');
  const lags = group.protections.map((m) => rows.find((r) => r.protection === m)?.lagSeconds ?? null);
  return {
    group: group.name,
    members: [...group.protections],
    consistency: group.consistency,
    lastGroupPoint: newest ? { id: newest.id, time: newest.time.toISOString(), ageSeconds: Math.max(0, (now.getTime() - newest.time.getTime()) / 1000) } : null,
    lastCycle: ended
      ? {
          instant: ended.instant,
          outcome: ended.outcome as 'committed' | 'failed',
          startedAt: ended.startedAt.toISOString(),
          endedAt: ended.endedAt?.toISOString() ?? null,
          windowMs: ended.windowMs ?? null,
          error: ended.error ? `${ended.error.code}: ${ended.error.message}` : null,
        }
      : null,
    cycleRunning: cycles[0]?.outcome === 'running',
    windowMs: cycles.find((c) => c.windowMs !== undefined)?.windowMs ?? null,
    lagSeconds: lags.some((l) => l === null) ? null : Math.max(...(lags as number[])),
  };
}

function watchHere(config: Config, state: StateStore, p: Protection): ProtectionStatus['watch'] {
  const w = watchOf(config, p);
  if (!w) return null;
  const last = lastWatchEvent(state, p.name);
  return { policy: w.watch.policy, plan: w.plan ?? null, state: last?.state ?? null, since: last?.at.toISOString() ?? null, detail: last?.detail ?? null };
}

function pausedHere(state: StateStore, protection: string): ProtectionStatus['paused'] {
  const held = pauseOf(state.db, protection);
  return held ? { by: held.pausedBy, at: held.pausedAt.toISOString(), reason: held.reason } : null;
}

async function identityOf(ctx: Parameters<typeof recordedSourceOf>[0], p: Protection): Promise<SourceIdentityStatus> {
  const none = { recorded: null, current: null, replaced: false, renamedTo: null, problem: null };
  try {
    const recorded = await recordedSourceOf(ctx, p);
    if (!recorded) return none;
    const at = { ...none, recorded: recorded.uuid };
    try {
      const found = await resolveSource(sourceVmLookup(ctx, p), p.name, p.source.vm, recorded);
      return { ...at, current: found.uuid, renamedTo: found.renamed?.to ?? null };
    } catch (err) {
      if (!(err instanceof VmdrError)) throw err;
      if (err.code === 'SOURCE_IDENTITY_CHANGED') return { ...at, current: String(err.subject.found), replaced: true };
      if (err.code === 'VM_NOT_FOUND') return at;
      return { ...at, problem: err.message };
    }
  } catch (err) {
    if (err instanceof VmdrError) return { ...none, problem: err.message };
    throw err;
  }
}

function fenceOf(vm: VmInfo | undefined): VmState['fenced'] {
  const mark = vm && fenceMarkOf(vm);
  return mark ? { failover: mark.failover, fencedAt: mark.fencedAt } : null;
}

/** The role from the DR state file when it is this host's, else what the last sync was told. */
function roleHere(ctx: { sites: SiteConnections; state: StateStore }, p: Protection, run: SyncRun | undefined): Pick<ProtectionStatus, 'role' | 'failover'> {
  if (ctx.sites.holdsStorage(p.target.site)) {
    const r = roleOf(ctx.state.db, p.name);
    return { role: r.role, failover: r.role === 'failed-over' ? { id: r.failover, point: r.point } : null };
  }
  if (run?.error?.code === 'PROTECTION_FAILED_OVER') return { role: 'failed-over', failover: { id: null, point: null } };
  return { role: null, failover: null };
}

/** A VM as status shows it, and what the hypervisor said of it when it could be read. */
async function readVm(site: string, vm: string, read: () => Promise<VmInfo>): Promise<{ state: VmState; info?: VmInfo }> {
  try {
    const info = await read();
    return { state: { site, vm, state: info.powerState }, info };
  } catch (err) {
    if (!(err instanceof VmdrError)) throw err;
    if (err.code === 'VM_NOT_FOUND') return { state: { site, vm, state: 'missing' } };
    // Another host's hypervisor (SITE_NOT_LOCAL) is not reachable from here by design.
    if (['HYPERVISOR_UNREACHABLE', 'SITE_NOT_LOCAL', 'SOURCE_SITE_UNREACHABLE'].includes(err.code)) return { state: { site, vm, state: 'unreachable', problem: err.message } };
    throw err;
  }
}

/** The points (oldest first) and the replica's space, or why they cannot be known (no storage configured, receiver unreachable). */
async function newestPoint(ctx: Parameters<typeof recoveryPointsAndSpace>[0], p: Protection): Promise<{ points?: RecoveryPoint[]; problem?: string; space?: ReplicaSpace | null }> {
  try {
    const { points, space } = await recoveryPointsAndSpace(ctx, p);
    return { points, space };
  } catch (err) {
    if (err instanceof VmdrError) return { problem: err.message };
    throw err;
  }
}
