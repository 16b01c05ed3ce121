/**
 * VMs paused together (virDomainSuspend, then virDomainResume): a consistency group's crash-
 * consistent instant across VMs. Only a running VM is paused, and only what this pause stopped is
 * resumed (a VM someone else paused stays as it was). A resume that fails is tried again until it
 * answers or the bound has passed: a group member must not stay paused because of one slow call.
 * Each pause is recorded before it is taken (hold-records.ts) and the record removed once the VM
 * runs again: should this process die in between, another vmdr process resumes the VM. A resume
 * that never answered keeps its record, for the same reason. A holder whose record another process
 * claimed first (its deadline passed: that process resumes the VM) does not resume it, and says its
 * pause was broken.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { failpoint } from '../failpoints.js';
import type { QuiesceOptions, VmPause } from '../types.js';
import type { LibvirtConnection } from './connection.js';
import { isTaken, type HoldRecords, type RecordedHold } from './hold-records.js';
import { powerStateOf } from './power-states.js';

const RESUME_RETRY_PAUSE_MS = 100;

export async function pauseVms(conn: LibvirtConnection, vms: string[], options: QuiesceOptions, records?: HoldRecords): Promise<VmPause> {
  const refused = new Map<string, string>();
  const pausedAt = new Map<string, { at: number; recorded?: RecordedHold }>();
  await Promise.all(
    vms.map(async (vm) => {
      let recorded: RecordedHold | undefined;
      try {
        const state = powerStateOf(await conn.call({ operation: 'read VM state', vm }, 'domainState', vm));
        if (state !== 'running') return void refused.set(vm, `VM ${JSON.stringify(vm)} is ${state}`);
        // Released by the holder within the pause's bound and then the window's (the caller's).
        recorded = await records?.record(vm, 'pause', 2 * options.timeoutMs);
        const at = Date.now();
        await conn.call({ operation: 'pause the VM', vm, requires: 'running', timeoutMs: options.timeoutMs }, 'suspendDomain', vm);
        pausedAt.set(vm, { at, ...(recorded ? { recorded } : {}) });
      } catch (err) {
        refused.set(vm, (err as Error).message);
        await recorded?.remove();
      }
    }),
  );
  // The crash tests' moment: this process dies holding its VMs paused.
  if (pausedAt.size > 0) failpoint('vms-paused');
  let resuming: Promise<Map<string, { pausedMs: number; error?: string; broken?: string }>> | undefined;
  const resumeOne = async (vm: string, { at, recorded }: { at: number; recorded?: RecordedHold }) => {
    const claim = await recorded?.claim();
    if (claim && isTaken(claim)) {
      const by = claim.by !== undefined ? `vmdr process ${claim.by}` : 'another vmdr process';
      const pausedMs = Date.now() - at;
      const broken = `the pause of VM ${JSON.stringify(vm)} was held past its deadline (${recorded!.deadline.toISOString()}, ${(pausedMs / 1000).toFixed(1)} s) and ${by} ${claim.failed ? 'tried to resume it (a resume that reports failure may have resumed it)' : 'resumed it'}: its checkpoint may have been taken after that`;
      return [vm, { pausedMs, broken }] as const;
    }
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      try {
        await conn.call({ operation: 'resume the VM', vm, timeoutMs: options.timeoutMs }, 'resumeDomain', vm);
        const pausedMs = Date.now() - at;
        await claim?.end(true);
        return [vm, { pausedMs }] as const;
      } catch (err) {
        if (Date.now() + RESUME_RETRY_PAUSE_MS >= deadline) {
          await claim?.end(false);
          return [vm, { pausedMs: Date.now() - at, error: `VM ${JSON.stringify(vm)} could not be resumed (${(err as Error).message}): \`virsh -c ${conn.uri} resume ${vm}\` resumes it` }] as const;
        }
        await delay(RESUME_RETRY_PAUSE_MS);
      }
    }
  };
  return {
    paused: [...pausedAt.keys()],
    refused,
    resume: () => (resuming ??= Promise.all([...pausedAt].map(([vm, p]) => resumeOne(vm, p))).then((r) => new Map(r))),
  };
}
