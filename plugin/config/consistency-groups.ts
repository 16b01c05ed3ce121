/**
 * Consistency groups: protections (the VMs of one application) whose points are taken at one
 * instant (plugin/replication/group-cycle.ts). The checks a group's entry needs beyond its shape:
 * members that exist, each in one group only, all on one source site (a group's cycle pauses or
 * freezes its members from one host; members on several source hosts are not built) and one DR
 * site (a failover of the group's point reads every member's replica on one host).
 */
import { z } from 'zod';
import { durationBetween } from './duration.js';
import type { Config, ConsistencyGroup, Protection } from './schema.js';

/** The entry's shape; `name` is the config's name schema (passed in: schema.ts imports this file). */
export function consistencyGroupSchema(name: z.ZodString) {
  return z.strictObject({
    name,
    /** Protections (by name), two or more. */
    protections: z.array(name).min(2, 'at least two protections'),
    /**
     * crash: the members are paused together while their checkpoints are taken; application:
     * their guests' filesystems are frozen together (the guest agent), each member then needs
     * the agent's channel.
     */
    consistency: z.enum(['crash', 'application']).default('crash'),
    /**
     * A member that is not running (shut off, paused, gone) when the group's cycle starts: wait
     * (the cycle retries until `memberDownWait` has passed, then fails) or fail at once. Never is
     * a group point recorded without every member.
     */
    onMemberDown: z.enum(['wait', 'fail']).default('wait'),
    /** How long a cycle waits for a member that is down (onMemberDown: wait). */
    memberDownWait: durationBetween('1s', '1h').prefault('1m'),
    /** The longest the members stay paused or frozen; a pause that takes longer is ended and the cycle fails. */
    pauseTimeout: durationBetween('1s', '60s').prefault('10s'),
  });
}

export function checkConsistencyGroups(config: Config, issue: (path: (string | number)[], message: string) => void): void {
  const protections = new Map(config.protections.map((p) => [p.name, p]));
  const inGroup = new Map<string, string>();
  config.consistencyGroups.forEach((group, g) => {
    const members = group.protections.flatMap((m) => protections.get(m) ?? []);
    group.protections.forEach((member, m) => {
      const path = ['consistencyGroups', g, 'protections', m];
      if (!protections.has(member)) return issue(path, `unknown protection "${member}"`);
      const other = inGroup.get(member);
      if (other !== undefined) return issue(path, `protection "${member}" is already in consistency group "${other}": a protection belongs to one group at most`);
      inGroup.set(member, group.name);
    });
    const sources = [...new Set(members.map((p) => p.source.site))];
    if (sources.length > 1) issue(['consistencyGroups', g, 'protections'], `the members of group "${group.name}" are on source sites ${sources.map((s) => `"${s}"`).join(', ')}: a consistency group's members must be on one source site`);
    const targets = [...new Set(members.map((p) => p.target.site))];
    if (targets.length > 1) issue(['consistencyGroups', g, 'protections'], `the members of group "${group.name}" go to DR sites ${targets.map((s) => `"${s}"`).join(', ')}: a consistency group's members must go to one DR site`);
  });
}

/**
 * The source site whose `vmdr serve` runs the group's loop: that of the group's FIRST listed
 * member. One rule every host applies alike, so exactly one daemon runs a group's cycles, even
 * once a group's members span several source sites.
 */
export function coordinatorSite(group: ConsistencyGroup, protections: readonly Protection[]): string {
  const first = protections.find((p) => p.name === group.protections[0]);
  if (!first) throw new Error(`consistency group "${group.name}": its first member "${group.protections[0]}" is not a protection (the config check refuses this)`);
  return first.source.site;
}
