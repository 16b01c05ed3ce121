/**
 * A consistency group's points, on its DR site: a group point is one group instant (`app@<ms>`,
 * group-cycle.ts) for which EVERY member of the group has a committed point carrying it. Derived
 * from the members' points, so it exists exactly when all of them do: a cycle where one member
 * failed leaves an instant some members lack, never a group point; nor is one offered once
 * retention merged one member's point of it away (retention.ts keeps the newest group point).
 */
import type { ConsistencyGroup } from '../config/schema.js';
import type { RecoveryPoint } from './replica/store.js';

export interface GroupPoint {
  /** The group instant: what `--point` names. */
  id: string;
  group: string;
  /** The newest of its members' point times. */
  time: Date;
  /** By member protection: its point of this instant. */
  members: Map<string, RecoveryPoint>;
}

/** Oldest first. `pointsOf` gives a member's points (oldest first). */
export function groupPoints(group: ConsistencyGroup, pointsOf: (protection: string) => RecoveryPoint[]): GroupPoint[] {
  const byInstant = new Map<string, Map<string, RecoveryPoint>>();
  for (const member of group.protections) {
    for (const point of pointsOf(member)) {
      if (!point.groupInstant) continue;
      const members = byInstant.get(point.groupInstant) ?? new Map<string, RecoveryPoint>();
      members.set(member, point);
      byInstant.set(point.groupInstant, members);
    }
  }
  return [...byInstant]
    .filter(([, members]) => members.size === group.protections.length)
    .map(([id, members]) => ({ id, group: group.name, time: new Date(Math.max(...[...members.values()].map((p) => p.time.getTime()))), members }))
    .sort((a, b) => instantMs(a.id) - instantMs(b.id));
}

/** The group a protection belongs to, if any. */
export function groupOf(groups: readonly ConsistencyGroup[], protection: string): ConsistencyGroup | undefined {
  return groups.find((g) => g.protections.includes(protection));
}

export function isGroupInstant(id: string): boolean {
  return /@\d+$/.test(id);
}

function instantMs(id: string): number {
  return Number(id.slice(id.lastIndexOf('@') + 1));
}
