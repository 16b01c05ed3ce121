/**
 * Which points a retention policy drops. Only a prefix of the chain (the oldest points) can be
 * merged down into base, so a point that must go but sits above one that stays is kept.
 */
import type { PointRow } from '../../state/points.js';

export interface RetentionPolicy {
  /** Keep at most this many of the newest points (at least 1 is always kept). */
  keep: number;
  /** Drop points whose data is older than this, the newest excepted. */
  maxAgeMs?: number;
}

export type RetentionCut = { drop: PointRow[]; target: PointRow } | { drop: []; skipped?: string };

export function retentionCut(points: PointRow[], policy: RetentionPolicy, now: Date): RetentionCut {
  const last = points.length - 1;
  const retained = (p: PointRow, i: number) =>
    i === last || (i > last - policy.keep && (policy.maxAgeMs === undefined || now.getTime() - p.timeMs <= policy.maxAgeMs));
  const firstKept = points.findIndex(retained);
  if (firstKept <= 0) return { drop: [] };
  // Merging into base passes through every point under the oldest kept one, so any pin stops it;
  // so do the points kept for a replaced source VM, until the operator releases them.
  const pinned = points.filter((p) => p.pinned || p.replacedSource).map((p) => `rp-${p.seq}`);
  if (pinned.length > 0) {
    const ids = points.slice(0, firstKept).map((p) => `rp-${p.seq}`);
    return { drop: [], skipped: `${ids.join(', ')} not merged: ${pinned.join(', ')} ${pinned.length > 1 ? 'are' : 'is'} pinned` };
  }
  return { drop: points.slice(0, firstKept), target: points[firstKept]! };
}
