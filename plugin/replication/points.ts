/** A protection's recovery points, and what its replica occupies, wherever this runs (see dr-site.ts). */
import type { Protection } from '../config/schema.js';
import { keptBy, policyOf, type KeptBy } from './replica/retention.js';
import { atDrSite, type DrContext } from './dr-site.js';
import { groupOf, groupPoints } from './group-points.js';
import { ReplicaStore, type RecoveryPoint, type ReplicaSpace } from './replica/store.js';

export function listRecoveryPoints(ctx: DrContext, protection: Protection): Promise<RecoveryPoint[]> {
  return atDrSite(
    ctx,
    protection,
    (storage, state) => new ReplicaStore(storage, state, { config: ctx.config }).listPoints(protection.name),
    (receiver) => receiver.listPoints(protection.name),
  );
}

/** The points and the space; `space` is null from a DR site whose receiver does not say it (older than tiers). */
type PointsAndSpace = { points: RecoveryPoint[]; space: ReplicaSpace | null };

export async function recoveryPointsAndSpace(ctx: DrContext, protection: Protection): Promise<PointsAndSpace> {
  // Here the answer is async too (the space is read from the files).
  return atDrSite<PointsAndSpace | Promise<PointsAndSpace>>(
    ctx,
    protection,
    async (storage, state) => {
      const store = new ReplicaStore(storage, state, { config: ctx.config });
      return { points: store.listPoints(protection.name), space: await store.space(protection.name) };
    },
    (receiver) => receiver.pointsAndSpace(protection.name),
  );
}

/** Why a point stays (the tier that keeps it, or newest, pinned, replaced, held-by-pin), or `expiring`: the next retention run merges it away. */
export type PointTier = KeptBy | 'expiring';
export const POINT_TIERS = ['all', 'minutely', 'hourly', 'daily', 'keep', 'newest', 'pinned', 'replaced', 'held-by-pin', 'group', 'expiring'] as const satisfies readonly PointTier[];

/**
 * Each point's tier under the protection's retention as at `now`, in the order given. `groupSeq`:
 * the seq of its point of its consistency group's newest group point (groupPointSeq), which
 * retention keeps (`group`) where no tier does.
 */
export function tiersOf(points: RecoveryPoint[], protection: Pick<Protection, 'retention'>, now = new Date(), groupSeq?: number): PointTier[] {
  const kept = keptBy(
    points.map((p) => ({ seq: p.seq, timeMs: p.time.getTime(), pinned: p.pinned, replacedSource: p.replacedSource })),
    policyOf(protection.retention),
    now,
    groupSeq,
  );
  return points.map((p) => kept.get(p.seq) ?? 'expiring');
}

/**
 * The seq of `protection`'s point (of `points`) of its consistency group's newest group point,
 * the one retention keeps for the group; undefined outside a group, before a group point, or when
 * another member's points cannot be read (then no point is said to be kept for the group).
 */
export async function groupPointSeq(ctx: DrContext, protection: Protection, points: RecoveryPoint[]): Promise<number | undefined> {
  const group = groupOf(ctx.config.consistencyGroups, protection.name);
  if (!group) return undefined;
  try {
    const others = new Map(
      await Promise.all(
        group.protections
          .filter((m) => m !== protection.name)
          .map(async (m) => [m, await listRecoveryPoints(ctx, ctx.config.protections.find((p) => p.name === m)!)] as const),
      ),
    );
    return groupPoints(group, (m) => (m === protection.name ? points : (others.get(m) ?? []))).at(-1)?.members.get(protection.name)?.seq;
  } catch {
    return undefined;
  }
}
