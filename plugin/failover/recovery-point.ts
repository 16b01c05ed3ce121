/**
 * Which recovery point a failover boots, and holding it: the newest, the one the user named, or
 * the newest at or before a moment. A booted point is pinned so retention never merges it (or
 * anything under it) away while a VM runs on top of it.
 */
import type { Protection } from '../config/schema.js';
import { ReplicaStore, type RecoveryPoint } from '../replication/replica/store.js';
import { RecoveryPointNotFound } from '../replication/replica/errors.js';
import { roleOf } from '../state/roles.js';
import { VmdrError } from '../../hypervisors/errors.js';
import { groupOf, groupPoints, isGroupInstant } from '../replication/group-points.js';
import { replicasOf, type RunContext } from './context.js';
import { NoRecoveryPoint } from './errors.js';

export interface PointChoice {
  /** A point id (rp-N). */
  point?: string;
  /** The newest point whose time is at or before this instant. */
  at?: Date;
}

/** What a step records about its point: plain JSON. */
export interface ChosenPoint {
  id: string;
  time: string;
  checkpoint: string;
  disks: { disk: string; image: string; sizeBytes: number }[];
}

/**
 * The point a run boots for `p`. A member of a consistency group that has a group point boots its
 * point of the group's newest one (or of the one `--point` names, or the newest at or before
 * `--at`), so every member of a plan starts from one instant; a member lacking the group point
 * named is refused (GROUP_POINT_INCOMPLETE) in the preflight, before anything started. A group
 * with no group point yet falls back to each member's own newest point.
 */
export function choosePointFor(ctx: RunContext, p: Protection, replicas: ReplicaStore, choice: PointChoice): RecoveryPoint {
  const group = groupOf(ctx.config.consistencyGroups, p.name);
  if (!group || (choice.point && !isGroupInstant(choice.point))) return choosePoint(replicas, p, choice);
  const members = new Map(ctx.config.protections.map((m) => [m.name, m]));
  const all = groupPoints(group, (name) => (name === p.name ? replicas : replicasOf(ctx, members.get(name)!)).listPoints(name));
  if (choice.point) {
    const named = all.find((g) => g.id === choice.point);
    if (named) return named.members.get(p.name)!;
    const own = replicas.listPoints(p.name).some((x) => x.groupInstant === choice.point);
    throw new VmdrError('GROUP_POINT_INCOMPLETE', `group point ${choice.point} of consistency group "${group.name}" is ${own ? 'incomplete: a member has no point of it' : `not a point of protection "${p.name}"`}`, {
      subject: { protection: p.name, point: choice.point, group: group.name },
      remedy: `\`vmdr points MEMBER --json\` shows each point's groupInstant: name one every member has, or none for the newest`,
    });
  }
  if (all.length === 0) return choosePoint(replicas, p, choice);
  const chosen = choice.at ? pointAt(p.name, all, choice.at) : all.at(-1)!;
  return chosen.members.get(p.name)!;
}

export function choosePoint(replicas: ReplicaStore, p: Protection, choice: PointChoice): RecoveryPoint {
  const points = replicas.listPoints(p.name);
  if (points.length === 0) throw new NoRecoveryPoint(p.name);
  if (choice.point) {
    const found = points.find((x) => x.id === choice.point);
    if (!found) throw new RecoveryPointNotFound(p.name, choice.point);
    return found;
  }
  if (choice.at) return pointAt(p.name, points, choice.at);
  return points.at(-1)!;
}

/** The newest of `points` (oldest first) whose time is at or before `at`; NoRecoveryPoint when every one is later. */
export function pointAt<P extends Pick<RecoveryPoint, 'id' | 'time'>>(protection: string, points: P[], at: Date): P {
  if (points.length === 0) throw new NoRecoveryPoint(protection);
  const found = points.filter((x) => x.time.getTime() <= at.getTime()).at(-1);
  if (!found) {
    throw new NoRecoveryPoint(
      protection,
      `has no recovery point at or before ${at.toISOString()}: the oldest is ${points[0]!.id} of ${points[0]!.time.toISOString()}`,
      `name a later time, or see \`vmdr points ${protection}\``,
    );
  }
  return found;
}

export function describePoint(point: RecoveryPoint): ChosenPoint {
  return { id: point.id, time: point.time.toISOString(), checkpoint: point.checkpoint, disks: point.disks.map((d) => ({ ...d })) };
}

/**
 * Unpins a point unless the protection still runs on it (a failover that is not undone): a drill
 * and a failover of the same point share one pin, and the failover's matters more.
 */
export function releasePoint(replicas: ReplicaStore, protection: string, point: string, state = replicas.state): void {
  const role = roleOf(state.db, protection);
  if (role.role === 'failed-over' && role.point === point) return;
  try {
    replicas.unpinPoint(protection, point);
  } catch (err) {
    // Already gone (a revert ran twice): nothing holds it any more.
    if (!(err instanceof RecoveryPointNotFound)) throw err;
  }
}
