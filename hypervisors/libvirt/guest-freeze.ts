/**
 * Guests' filesystems frozen through the QEMU guest agent (libvirt's virDomainFSFreeze and
 * virDomainFSThaw), for application-consistent points: frozen, captured, thawed. The agent gets a
 * bound for each answer (libvirt's default is to wait without end). A freeze that does not answer
 * in time is given up, but the guest may still freeze once its agent gets to it (its fsfreeze
 * hooks run first), so every VM whose freeze was asked is thawed, frozen or not, and the thaw is
 * asked again until it answers or three times the bound has passed. A guest left frozen beyond
 * that keeps the record of its hold (hold-records.ts), as does one whose process died while it was
 * frozen: another vmdr process thaws it (left-holds.ts). The next freeze's failure thaws it too
 * (qemu-ga refuses a freeze while frozen). A holder whose record another process claimed first
 * (its deadline passed: that process thaws it) does not thaw: its point is crash-consistent, with
 * the issue `hold-broken` (the thaw may have come before the checkpoint's instant).
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { GuestFreeze, QuiesceIssue, QuiesceOptions, QuiesceResult } from '../types.js';
import { GuestAgentUnavailable, VmdrError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { VIR_ERR } from './api/codes.js';
import type { LibvirtConnection } from './connection.js';
import { libvirtCode } from './errors.js';
import { HoldUnrecorded, isTaken, type HoldRecords, type RecordedHold } from './hold-records.js';
import { powerStateOf } from './power-states.js';

/** Attempts at the thaw, each bounded like the freeze, within this many times the bound. */
const THAW_BUDGET = 3;
const THAW_RETRY_PAUSE_MS = 200;

type Asked = { vm: string; askedAt: number; frozen: boolean; issue?: QuiesceIssue; thaw: boolean; recorded?: RecordedHold };

export async function freezeGuests(conn: LibvirtConnection, vms: string[], options: QuiesceOptions, records?: HoldRecords): Promise<GuestFreeze> {
  // libvirt counts whole seconds, and 0 would mean "do not wait".
  const seconds = Math.max(1, Math.ceil(options.timeoutMs / 1000));
  const asked = await Promise.all(vms.map((vm) => freezeOne(conn, vm, seconds, records)));
  // The crash tests' moment: this process dies holding its guests frozen.
  if (asked.some((a) => a.frozen)) failpoint('guests-frozen');
  let thawing: Promise<Map<string, QuiesceResult>> | undefined;
  return {
    frozen: asked.filter((a) => a.frozen).map((a) => a.vm),
    thaw: () => (thawing ??= Promise.all(asked.map(async (a) => [a.vm, await thawOne(conn, a, seconds)] as const)).then((r) => new Map(r))),
  };
}

async function freezeOne(conn: LibvirtConnection, vm: string, seconds: number, records: HoldRecords | undefined): Promise<Asked> {
  const askedAt = Date.now();
  let recorded: RecordedHold | undefined;
  try {
    // A paused guest's agent cannot answer: asking would only wait out the timeout, then the thaw's.
    const state = powerStateOf(await conn.call({ operation: 'read VM state', vm }, 'domainState', vm));
    if (state !== 'running') {
      return { vm, askedAt, frozen: false, thaw: false, issue: { code: 'vm-not-running', message: `VM ${JSON.stringify(vm)} is ${state}: no guest runs to freeze` } };
    }
    // Released by the holder within the freeze's bound and then the window's (the caller's).
    recorded = await records?.record(vm, 'freeze', 2 * seconds * 1000);
    await agentCall(conn, vm, 'freeze', seconds);
    return { vm, askedAt, frozen: true, thaw: true, ...(recorded ? { recorded } : {}) };
  } catch (err) {
    const issue = freezeIssue(conn, vm, err, seconds, Date.now() - askedAt);
    // A freeze that reached an agent may still take effect; one that reached none (no channel, no
    // agent connected to it, no guest running, no record of it) cannot.
    const thaw = (issue.code === 'freeze-timed-out' || issue.code === 'freeze-failed') && !(err instanceof HoldUnrecorded);
    if (!thaw) await recorded?.remove();
    return { vm, askedAt, frozen: false, issue, thaw, ...(thaw && recorded ? { recorded } : {}) };
  }
}

async function thawOne(conn: LibvirtConnection, asked: Asked, seconds: number): Promise<QuiesceResult> {
  const crash = (issue: QuiesceIssue): QuiesceResult => ({ consistency: 'crash', issue });
  if (!asked.thaw) return crash(asked.issue!);
  const claim = await asked.recorded?.claim();
  if (claim && isTaken(claim)) {
    if (!asked.frozen) return crash(asked.issue!);
    const by = claim.by !== undefined ? `vmdr process ${claim.by}` : 'another vmdr process';
    const held = ((Date.now() - asked.askedAt) / 1000).toFixed(1);
    return crash({
      code: 'hold-broken',
      message: `the freeze of VM ${JSON.stringify(asked.vm)} was held past its deadline (${asked.recorded!.deadline.toISOString()}, ${held} s since it was asked) and ${by} ${claim.failed ? 'tried to thaw it (a thaw that reports failure may have thawed it)' : 'thawed it'}: the checkpoint may have been taken after the thaw`,
    });
  }
  const started = Date.now();
  const deadline = started + THAW_BUDGET * seconds * 1000;
  let attempts = 0;
  for (;;) {
    attempts += 1;
    try {
      await agentCall(conn, asked.vm, 'thaw', seconds);
      const window = { freezeWindowMs: Date.now() - asked.askedAt };
      await claim?.end(true);
      return asked.frozen ? { consistency: 'application', ...window } : { ...crash(asked.issue!), ...window };
    } catch (err) {
      // A VM that stopped, or lost its agent channel, holds no frozen filesystem any more.
      if (err instanceof VmdrError && (err.code === 'INVALID_POWER_STATE' || err.code === 'VM_NOT_FOUND' || (err instanceof GuestAgentUnavailable && err.reason === 'not-configured'))) {
        await claim?.end(true);
        return asked.frozen ? { consistency: 'application' } : crash(asked.issue!);
      }
      if (Date.now() + THAW_RETRY_PAUSE_MS < deadline) {
        await delay(THAW_RETRY_PAUSE_MS);
        continue;
      }
      // Its record stays: another vmdr process thaws it once it answers.
      await claim?.end(false);
      const waited = Math.round((Date.now() - started) / 100) / 10;
      const timedOut = err instanceof GuestAgentUnavailable && err.reason === 'not-answering';
      const remedy = `\`virsh -c ${conn.uri} domfsthaw ${asked.vm}\` thaws them, and so does the next cycle's freeze`;
      const thawIssue: QuiesceIssue = timedOut
        ? { code: 'thaw-timed-out', message: `no thaw of VM ${JSON.stringify(asked.vm)} answered within ${waited} s (${attempts} attempts): its filesystems may still be frozen; ${remedy}` }
        : { code: 'thaw-failed', message: `the thaw of VM ${JSON.stringify(asked.vm)} failed (${(err as Error).message}): its filesystems may still be frozen; ${remedy}` };
      const window = { freezeWindowMs: Date.now() - asked.askedAt };
      // The capture was frozen whatever the thaw did: the point stays application-consistent, and says so.
      if (asked.frozen) return { consistency: 'application', issue: thawIssue, ...window };
      return { consistency: 'crash', issue: { code: asked.issue!.code, message: `${asked.issue!.message}; ${thawIssue.message}` }, ...window };
    }
  }
}

function agentCall(conn: LibvirtConnection, vm: string, action: 'freeze' | 'thaw', seconds: number): Promise<number> {
  return conn.call(
    // The pool's own bound only backs libvirt's: the agent's answer is bounded by `seconds`.
    { operation: `${action} the guest's filesystems`, vm, agent: true, requires: 'running', timeoutMs: seconds * 1000 + 10_000 },
    'agentFilesystems',
    vm,
    action,
    seconds,
  );
}

function freezeIssue(conn: LibvirtConnection, vm: string, err: unknown, seconds: number, tookMs: number): QuiesceIssue {
  const message = (err as Error).message;
  if (err instanceof GuestAgentUnavailable) {
    if (err.reason === 'not-configured') return { code: 'no-agent-channel', message: `VM ${JSON.stringify(vm)} has no QEMU guest agent channel: ${message}` };
    // libvirt answers at once when no agent ever opened the channel, and after the bound when one did and went silent.
    if (tookMs < seconds * 1000) return { code: 'agent-not-answering', message };
    return { code: 'freeze-timed-out', message: `the guest agent of VM ${JSON.stringify(vm)} did not answer the freeze within ${seconds} s: given up, and thawed` };
  }
  if (err instanceof VmdrError && err.code === 'INVALID_POWER_STATE') return { code: 'vm-not-running', message };
  const code = libvirtCode((err as { cause?: unknown }).cause ?? err);
  if (code === VIR_ERR.NO_SUPPORT) return { code: 'unsupported', message: `${conn.uri} cannot freeze a guest's filesystems: ${message}` };
  return { code: 'freeze-failed', message: `the freeze of VM ${JSON.stringify(vm)} failed: ${message}` };
}
