/**
 * Releasing the holds a vmdr process left (hold-records.ts): its process is gone, or it overran its
 * deadline. A pause is undone only while the VM is still paused with libvirt's reason "paused by
 * user" (what virDomainSuspend gives): a VM paused for an I/O error, a migration or a snapshot is
 * not vmdr's to resume. A person's `virsh suspend` gives the same reason, but leaves no record, so
 * it is never touched. A freeze is undone only where the agent says the guest is frozen. Each
 * release claims the record first (hold-records.ts): a holder that overran its deadline but lives
 * finds the claim at its own release, and knows its hold was broken; so it does after a release
 * that failed, which may still have taken effect (the claim marked the record as tried).
 */
import type { ReleasedHold } from '../types.js';
import { GuestAgentUnavailable, VmdrError } from '../errors.js';
import { VIR_DOMAIN_PAUSED, VIR_DOMAIN_STATE } from './api/codes.js';
import type { LibvirtConnection } from './connection.js';
import type { HoldEntry, HoldRecords } from './hold-records.js';
import { powerStateOf } from './power-states.js';

/** The agent's bound for the status and the thaw: a guest still frozen has a live agent. */
const AGENT_SECONDS = 5;

/** Releases in flight in this process, by record: a concurrent caller does not release (nor report) one twice. */
const releasing = new Map<string, Promise<ReleasedHold | undefined>>();

export async function releaseLeftHolds(conn: LibvirtConnection, records: HoldRecords, vms?: string[]): Promise<ReleasedHold[]> {
  const left = (await records.list()).filter((h) => h.left && (!vms || vms.includes(h.vm)));
  const released = await Promise.all(
    left.map(async (hold) => {
      if (releasing.has(hold.file)) return void (await releasing.get(hold.file)!.catch(() => undefined));
      const release = releaseOne(conn, records, hold).finally(() => releasing.delete(hold.file));
      releasing.set(hold.file, release);
      return release;
    }),
  );
  return released.filter((r): r is ReleasedHold => r !== undefined);
}

async function releaseOne(conn: LibvirtConnection, records: HoldRecords, hold: HoldEntry): Promise<ReleasedHold | undefined> {
  const { file: _, ...about } = hold;
  // Its holder releasing it now, or another process: not this one's to release.
  const claim = await records.claim(hold);
  if (!claim) return undefined;
  let outcome: Pick<ReleasedHold, 'action' | 'detail'>;
  try {
    outcome = hold.kind === 'pause' ? await resume(conn, hold.vm) : await thaw(conn, hold.vm);
  } catch (err) {
    if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') outcome = { action: 'none', detail: 'the VM is gone' };
    else {
      const remedy = hold.kind === 'pause' ? `\`virsh -c ${conn.uri} resume ${hold.vm}\` resumes it` : `\`virsh -c ${conn.uri} domfsthaw ${hold.vm}\` thaws it`;
      outcome = { action: 'failed', detail: `${(err as Error).message}; ${remedy}` };
    }
  }
  // A release that failed keeps its record: the next sweep tries again, and `vmdr status` shows it.
  // A live holder that overran its deadline is told whose release broke its hold, even a failed one
  // (a timed-out resume or thaw may have been done all the same): the claim marked the record.
  await claim.end(outcome.action !== 'failed', hold.left === 'deadline-passed');
  return { ...about, left: hold.left!, ...outcome, heldMs: Date.now() - hold.since.getTime() };
}

async function resume(conn: LibvirtConnection, vm: string): Promise<Pick<ReleasedHold, 'action' | 'detail'>> {
  const { state, reason } = await conn.call({ operation: 'read VM state', vm }, 'domainStateReason', vm);
  if (state !== VIR_DOMAIN_STATE.PAUSED) return { action: 'none', detail: `the VM is ${powerStateOf(state)}` };
  if (reason !== VIR_DOMAIN_PAUSED.USER) {
    const why = Object.entries(VIR_DOMAIN_PAUSED).find(([, n]) => n === reason)?.[0].toLowerCase().replace('_', ' ') ?? String(reason);
    return { action: 'none', detail: `the VM is paused for another reason than vmdr's (${why}): left paused` };
  }
  try {
    await conn.call({ operation: 'resume the VM', vm }, 'resumeDomain', vm);
    return { action: 'resumed' };
  } catch (err) {
    // Another process released it first (a sweep and a cycle at the same moment).
    const now = await conn.call({ operation: 'read VM state', vm }, 'domainState', vm).catch(() => undefined);
    if (now !== undefined && powerStateOf(now) === 'running') return { action: 'none', detail: 'the VM runs' };
    throw err;
  }
}

async function thaw(conn: LibvirtConnection, vm: string): Promise<Pick<ReleasedHold, 'action' | 'detail'>> {
  const state = powerStateOf(await conn.call({ operation: 'read VM state', vm }, 'domainState', vm));
  // A paused guest's agent cannot answer: the record stays until it runs again (or a person acts).
  if (state === 'paused') return { action: 'failed', detail: `VM ${JSON.stringify(vm)} is paused: its guest agent cannot thaw it until it runs` };
  if (state !== 'running') return { action: 'none', detail: `the VM is ${state}` };
  try {
    const answer = await conn.call(
      { operation: "read the guest's freeze state", vm, agent: true, requires: 'running', timeoutMs: AGENT_SECONDS * 1000 + 10_000 },
      'agentCommand',
      vm,
      JSON.stringify({ execute: 'guest-fsfreeze-status' }),
      AGENT_SECONDS,
    );
    if ((JSON.parse(answer) as { return?: string }).return !== 'frozen') return { action: 'none', detail: "the guest's filesystems are thawed" };
    await conn.call({ operation: "thaw the guest's filesystems", vm, agent: true, requires: 'running', timeoutMs: AGENT_SECONDS * 1000 + 10_000 }, 'agentFilesystems', vm, 'thaw', AGENT_SECONDS);
    return { action: 'thawed' };
  } catch (err) {
    // No agent channel: nothing could have frozen it.
    if (err instanceof GuestAgentUnavailable && err.reason === 'not-configured') return { action: 'none', detail: 'the VM has no guest agent channel' };
    throw err;
  }
}
