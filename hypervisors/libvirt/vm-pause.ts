/**
 * VMs paused together (virDomainSuspend, then virDomainResume): a consistency group's crash-
 * consistent instant across VMs. Only a running VM is paused, and only what this pause stopped is
 * resumed (a VM someone else paused stays as it was). A resume that fails is tried again until it
 * answers or the bound has passed: a group member must not stay paused because of one slow call.
 * Each pause is recorded before it is taken (hold-records.ts) and the record removed once the VM
 * runs again: should this process die in between, another vmdr process resumes the VM. A resume
 * that never answered keeps its record, for the same reason.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { failpoint } from '../failpoints.js';
import type { QuiesceOptions, VmPause } from '../types.js';
import type { LibvirtConnection } from './connection.js';
import type { HoldRecords } from './hold-records.js';
import { powerStateOf } from './power-states.js';

const RESUME_RETRY_PAUSE_MS = 100;

export async function pauseVms(conn: LibvirtConnection, vms: string[], options: QuiesceOptions, records?: HoldRecords): Promise<VmPause> {
  const refused = new Map<string, string>();
  const pausedAt = new Map<string, { at: number; unrecord?: () => Promise<void> }>();
  await Promise.all(
    vms.map(async (vm) => {
      let unrecord: (() => Promise<void>) | undefined;
      try {
        const state = powerStateOf(await conn.call({ operation: 'read VM state', vm }, 'domainState', vm));
        if (state !== 'running') return void refused.set(vm, `VM ${JSON.stringify(vm)} is ${state}`);
        // Released by the holder within the pause's bound and then the window's (the caller's).
        unrecord = await records?.record(vm, 'pause', 2 * options.timeoutMs);
        const at = Date.now();
        await conn.call({ operation: 'pause the VM', vm, requires: 'running', timeoutMs: options.timeoutMs }, 'suspendDomain', vm);
        pausedAt.set(vm, { at, ...(unrecord ? { unrecord } : {}) });
      } catch (err) {
        refused.set(vm, (err as Error).message);
        await unrecord?.();
      }
    }),
  );
  // The crash tests' moment: this process dies holding its VMs paused.
  if (pausedAt.size > 0) failpoint('vms-paused');
  let resuming: Promise<Map<string, { pausedMs: number; error?: string }>> | undefined;
  const resumeOne = async (vm: string, { at, unrecord }: { at: number; unrecord?: () => Promise<void> }) => {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      try {
        await conn.call({ operation: 'resume the VM', vm, timeoutMs: options.timeoutMs }, 'resumeDomain', vm);
        const pausedMs = Date.now() - at;
        await unrecord?.();
        return [vm, { pausedMs }] as const;
      } catch (err) {
        if (Date.now() + RESUME_RETRY_PAUSE_MS >= deadline) {
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
