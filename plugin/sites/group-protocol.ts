/**
 * The consistency group steps a group's coordinating site asks of another source site's endpoint
 * (group-routes.ts serves them, group-client.ts asks them), for the members on that site:
 *   down     which members are not running (the coordinator waits or fails, onMemberDown);
 *   join     a held NDJSON answer: the members' cycles run to their capture, a notice line
 *            {arrived: true} says all wait there, the result line is every member's outcome
 *            once shipped. The connection is the coordinator's presence: closed, the site lets
 *            its members go uncaptured and ends any hold at once;
 *   hold     pause (freeze) the members, answered when done with those not held; the site ends
 *            the hold by itself after the group's pauseTimeout, whatever the coordinator does;
 *   begin    begin every member's backup, answered when all have begun (or failed);
 *   release  resume (thaw), answered when done.
 * Each step names the cycle by its group instant (`app@<ms>`). Only the coordinating site may ask.
 */
import { z } from 'zod';
import { SOURCE_SITE_PREFIX } from './source-site.js';

export const GROUP_PREFIX = `${SOURCE_SITE_PREFIX}/groups`;
export type GroupStep = 'down' | 'join' | 'hold' | 'begin' | 'release';

export function groupStepPath(group: string, step: GroupStep): string {
  return `${GROUP_PREFIX}/${encodeURIComponent(group)}/${step}`;
}

const name = z.string().min(1).max(128);
/** `down`: the members the coordinator expects on this site (its config and this site's must agree). */
export const GroupDownBody = z.strictObject({ members: z.array(name).min(1).max(100) });
export const GroupJoinBody = z.strictObject({ instant: z.string().min(3).max(200), members: z.array(name).min(1).max(100) });
export const GroupStepBody = z.strictObject({ instant: z.string().min(3).max(200) });

export interface GroupDownAnswer {
  down: { protection: string; why: string }[];
}
export interface GroupHoldAnswer {
  notHeld: { protection: string; why: string }[];
}
export interface GroupReleaseAnswer {
  warnings: string[];
}
