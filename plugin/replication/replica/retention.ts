/**
 * Which points a retention policy drops, and why each kept point stays (its tier).
 *
 * `keep`/`maxAge` (the policy before tiers) keeps the newest points, so only a prefix of the chain
 * goes, merged down into base; any pin stops it. Time tiers keep, within each tier's window, the
 * newest point of each minute, hour or day (`all`: every point), plus the newest point overall and
 * the pinned ones, so points go from the middle of the chain too: each run of them between two
 * kept points is merged up into the kept point above it (merge.ts).
 *
 * A pinned point (a VM boots on it) and every point under it stay as they are: the booted chain
 * reads through all of them, and a merge into base rewrites base, which every chain reads. So
 * nothing at or under the newest pin (or point kept for a replaced source VM) is dropped, and a
 * merge into base waits until no point is pinned.
 *
 * A consistency group member's point of its group's newest group point (`group`, given by the
 * caller: group-points.ts) stays too, as a tier would keep it (points under it may still go): so
 * retention never breaks the newest group point up while the other members keep theirs.
 */
import { TIER_BUCKET_MS, TIERS, type Retention, type TierName } from '../../config/retention.js';
import type { PointRow } from '../../state/points.js';

export type RetentionPolicy = { keep: number; maxAgeMs?: number } | { tiers: Partial<Record<TierName, number>> };

/** Why a point stays: the tier that keeps it, or what holds it besides the tiers. */
export type KeptBy = TierName | 'keep' | 'newest' | 'pinned' | 'replaced' | 'held-by-pin' | 'group';

export interface RetentionCut {
  /** The points under the oldest kept one, merged into base; `target` ends up held by base. */
  prefix?: { drop: PointRow[]; target: PointRow };
  /** Runs of dropped points between two kept ones, oldest run first; each merges into `above`. */
  middles: { drop: PointRow[]; below: PointRow; above: PointRow }[];
  /** Points the policy lets go that stay, and why. */
  skipped?: string;
}

export function policyOf(retention: Retention): RetentionPolicy {
  if (retention.tiers) return { tiers: retention.tiers };
  return { keep: retention.keep, ...(retention.maxAge !== undefined ? { maxAgeMs: retention.maxAge } : {}) };
}

/** What the choice reads of a point. */
export type RetainedPoint = Pick<PointRow, 'seq' | 'timeMs' | 'pinned' | 'replacedSource'>;

/** By seq, why each point stays; a point absent from the map goes at the next retention run. */
export function keptBy(points: RetainedPoint[], policy: RetentionPolicy, now: Date, group?: number): Map<number, KeptBy> {
  const kept = new Map<number, KeptBy>();
  const last = points.length - 1;
  if (last < 0) return kept;
  if (!('tiers' in policy)) {
    // Any pin stops the merge into base, the only one this policy makes: every point stays.
    const held = points.some((p) => p.pinned || p.replacedSource);
    points.forEach((p, i) => {
      const why: KeptBy | undefined =
        i === last ? 'newest' : p.pinned ? 'pinned' : p.replacedSource ? 'replaced' : keptByCount(points, i, policy, now) ? 'keep' : p.seq === group ? 'group' : held || (group !== undefined && p.seq > group) ? 'held-by-pin' : undefined;
      if (why) kept.set(p.seq, why);
    });
    return kept;
  }
  const tiers = TIERS.filter((t) => policy.tiers[t] !== undefined);
  // Newest first: the first point met in a bucket is its newest, the one the bucket keeps.
  const seen = new Map<TierName, Set<number>>(tiers.map((t) => [t, new Set<number>()]));
  const pinTop = newestPin(points);
  for (let i = last; i >= 0; i--) {
    const p = points[i]!;
    const age = now.getTime() - p.timeMs;
    let tier: TierName | undefined;
    for (const t of tiers) {
      if (age > policy.tiers[t]!) continue;
      // Every tier marks the bucket, so an older point of a bucket a shorter tier kept is not kept again.
      const bucket = t === 'all' ? p.seq : Math.floor(p.timeMs / TIER_BUCKET_MS[t]);
      const buckets = seen.get(t)!;
      if (buckets.has(bucket)) continue;
      buckets.add(bucket);
      tier ??= t;
    }
    const why: KeptBy | undefined =
      i === last ? 'newest' : p.pinned ? 'pinned' : p.replacedSource ? 'replaced' : tier ?? (p.seq === group ? 'group' : pinTop !== undefined && p.seq < pinTop ? 'held-by-pin' : undefined);
    if (why) kept.set(p.seq, why);
  }
  return kept;
}

export function retentionCut(points: PointRow[], policy: RetentionPolicy, now: Date, group?: number): RetentionCut {
  if (!('tiers' in policy)) {
    // Only a prefix goes: the group's point bounds it, and what lies above it stays.
    const byCount = points.findIndex((_, i) => keptByCount(points, i, policy, now));
    const grouped = points.findIndex((p) => p.seq === group);
    return legacyCut(points, grouped >= 0 && grouped < byCount ? grouped : byCount);
  }
  const kept = keptBy(points, policy, now, group);
  const firstKept = points.findIndex((p) => kept.has(p.seq));
  const cut: RetentionCut = { middles: [] };
  if (firstKept > 0) cut.prefix = { drop: points.slice(0, firstKept), target: points[firstKept]! };
  for (let i = firstKept + 1; i < points.length; i++) {
    if (kept.has(points[i]!.seq)) continue;
    let j = i;
    while (!kept.has(points[j]!.seq)) j++; // the newest point is always kept
    cut.middles.push({ drop: points.slice(i, j), below: points[i - 1]!, above: points[j]! });
    i = j;
  }
  const held = points.filter((p) => kept.get(p.seq) === 'held-by-pin').map(id);
  if (held.length > 0) cut.skipped = `${listed(held)} kept: under pinned rp-${newestPin(points)}`;
  return cut;
}

/** `keep`/`maxAge`: the newest `keep` points younger than maxAge, and the newest whatever its age. */
function keptByCount(points: RetainedPoint[], i: number, policy: { keep: number; maxAgeMs?: number }, now: Date): boolean {
  const last = points.length - 1;
  return i === last || (i > last - policy.keep && (policy.maxAgeMs === undefined || now.getTime() - points[i]!.timeMs <= policy.maxAgeMs));
}

/** The policy before tiers: only the oldest points go, into base, and only when nothing is pinned. */
function legacyCut(points: PointRow[], firstKept: number): RetentionCut {
  if (firstKept <= 0) return { middles: [] };
  // Merging into base passes through every point under the oldest kept one, so any pin stops it;
  // so do the points kept for a replaced source VM, until the operator releases them.
  const pinned = points.filter((p) => p.pinned || p.replacedSource).map(id);
  if (pinned.length > 0) {
    const ids = points.slice(0, firstKept).map(id);
    return { middles: [], skipped: `${ids.join(', ')} not merged: ${pinned.join(', ')} ${pinned.length > 1 ? 'are' : 'is'} pinned` };
  }
  return { prefix: { drop: points.slice(0, firstKept), target: points[firstKept]! }, middles: [] };
}

/** The seq of the newest point a VM may run on or the operator keeps; undefined when none. */
function newestPin(points: RetainedPoint[]): number | undefined {
  for (let i = points.length - 1; i >= 0; i--) if (points[i]!.pinned || points[i]!.replacedSource) return points[i]!.seq;
  return undefined;
}

const id = (p: PointRow) => `rp-${p.seq}`;

/** Ids as a line can hold them: a pin held for days at a second's cadence holds thousands. */
const listed = (ids: string[]) => (ids.length <= 4 ? ids.join(', ') : `${ids[0]}, ${ids[1]}, … ${ids.at(-1)} (${ids.length} points)`);
