/**
 * A run's step that waits for a person: its approval row asked for once (state/approvals.ts), the
 * journal told how to let it go on, then looked at until someone approves it (`vmdr runbook resume`,
 * `vmdr failover approve`, the API's approve route: another process). A run killed while it waits
 * finds its row again when resumed.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { approvalOf, requestApproval } from '../state/approvals.js';
import { RUN, type FailoverJournal } from './journal.js';

/** How often a waiting step looks whether it was approved. */
const APPROVAL_POLL_MS = 500;

export interface Approved {
  message: string;
  approvedAt: string;
  approvedBy: string | null;
}

/** Waits for the approval of `name` (a journal step `step` of the run); `how` says how to approve it. */
export async function waitForApproval(journal: FailoverJournal, name: string, step: string, message: string, how: string, signal: AbortSignal | undefined): Promise<Approved> {
  const db = journal.state.db;
  requestApproval(db, journal.failover, name, message);
  journal.waiting(RUN, step, `${message} (${how})`);
  for (;;) {
    const approval = approvalOf(db, journal.failover, name)!;
    if (approval.approvedAt) return { message, approvedAt: approval.approvedAt.toISOString(), approvedBy: approval.approvedBy };
    await delay(APPROVAL_POLL_MS, undefined, signal ? { signal } : {});
  }
}
