/**
 * How consistent a recovery point's data is. crash: the disks as they were at one instant, as a
 * power cut leaves them (journaling filesystems and databases recover from it). application: the
 * guest's filesystems were frozen through its guest agent at that instant, so everything written
 * before was flushed and nothing was half-written. A protection asks for it (`consistency:
 * application`); a point that could not have it says why, and so does a thaw that went wrong.
 */
import type { QuiesceResult } from '../../hypervisors/types.js';

export interface PointConsistency {
  consistency: 'application' | 'crash';
  /** Why crash although application was asked, or what went wrong after the freeze; null when nothing did. */
  consistencyIssue: { code: string; message: string } | null;
  /** From asking the freeze to the thaw's answer: the longest the guest's writes were held. */
  freezeWindowMs: number | null;
  /**
   * The consistency group instant the point was taken in (`<group>@<ms>`, group-cycle.ts): a group
   * point is its group's members' points sharing one (group-points.ts). Absent or null: none.
   */
  groupInstant?: string | null;
}

export const CRASH_CONSISTENT: PointConsistency = { consistency: 'crash', consistencyIssue: null, freezeWindowMs: null };

/** What a capture's freeze gives its point; no freeze asked gives a plain crash-consistent point. */
export function consistencyOf(quiesce: QuiesceResult | undefined): PointConsistency {
  if (!quiesce) return CRASH_CONSISTENT;
  return {
    consistency: quiesce.consistency,
    consistencyIssue: quiesce.issue ? { code: quiesce.issue.code, message: quiesce.issue.message } : null,
    freezeWindowMs: quiesce.freezeWindowMs ?? null,
  };
}

/**
 * In a table cell or a log line: "application (frozen 84 ms)", "crash (no-agent-channel)",
 * "application (frozen 3021 ms; thaw-timed-out)". A point from a receiver that predates the field is crash.
 */
export function describeConsistency(p: Partial<PointConsistency>): string {
  const notes = [p.freezeWindowMs != null ? `frozen ${p.freezeWindowMs} ms` : undefined, p.consistencyIssue?.code].filter(Boolean);
  return `${p.consistency ?? 'crash'}${notes.length ? ` (${notes.join('; ')})` : ''}`;
}
