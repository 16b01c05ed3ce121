/**
 * Consistency groups: protections (the VMs of one application) whose points are taken at one
 * instant (plugin/replication/group-cycle.ts). The checks a group's entry needs beyond its shape:
 * members that exist, each in one group only, one DR site (a failover of the group's point
 * reads every member's replica on one host) and one owner: a group is one application, so one
 * tenant's (or the operator's own); members of two tenants would tie one customer's VMs to
 * another's pauses, and each tenant's status would name the other's VMs. Members may be on several
 * source sites: the group's
 * COORDINATING site (coordinatorSite) runs its cycle, and holds the members of the other source
 * sites through their hosts' `vmdr serve` (plugin/replication/group-cycle.ts).
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
    const targets = [...new Set(members.map((p) => p.target.site))];
    if (targets.length > 1) issue(['consistencyGroups', g, 'protections'], `the members of group "${group.name}" go to DR sites ${targets.map((s) => `"${s}"`).join(', ')}: a consistency group's members must go to one DR site`);
    const owners = [...new Set(members.map((p) => p.tenant))];
    if (owners.length > 1) {
      const named = owners.map((t) => (t === undefined ? 'the operator (no tenant)' : `tenant "${t}"`)).join(', ');
      issue(['consistencyGroups', g, 'protections'], `the members of group "${group.name}" belong to ${named}: a consistency group's members must belong to one tenant`);
    }
  });
}

/**
 * The source site that runs a group's cycles: its first listed member's. The other members'
 * source sites take part through their endpoints, asked by this one.
 */
export function coordinatorSite(group: Pick<ConsistencyGroup, 'protections'>, protections: readonly Pick<Protection, 'name' | 'source'>[]): string {
  return protections.find((p) => p.name === group.protections[0])!.source.site;
}
