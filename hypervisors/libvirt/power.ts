/**
 * Power: libvirt's domain states in vmdr's words, and stopping a VM the way StopOptions asks
 * (graceful with a deadline, optionally forced after it; or forced at once).
 */
import { DomainState } from '@unraid/libvirt';
import { setTimeout as delay } from 'node:timers/promises';
import { StopTimedOut } from '../errors.js';
import type { PowerState, StopOptions } from '../types.js';
import type { Domain, LibvirtConnection } from './connection.js';

export const DEFAULT_GRACEFUL_TIMEOUT_MS = 60_000;
const POLL_MS = 200;

export function powerStateOf(state: DomainState): PowerState {
  switch (state) {
    case DomainState.RUNNING:
    case DomainState.BLOCKED:
      return 'running';
    case DomainState.PAUSED:
      return 'paused';
    case DomainState.SHUTDOWN:
      return 'shutting-down';
    case DomainState.SHUTOFF:
      return 'shutoff';
    case DomainState.CRASHED:
      return 'crashed';
    case DomainState.PMSUSPENDED:
      return 'suspended';
    default:
      return 'unknown';
  }
}

export async function powerState(conn: LibvirtConnection, domain: Domain, vm: string): Promise<PowerState> {
  const info = await conn.call({ operation: 'read power state', vm }, (h) => h.domainGetInfo(domain));
  return powerStateOf(info.state);
}

/** A VM that is already off stays off and this returns at once. */
export async function stopDomain(conn: LibvirtConnection, domain: Domain, vm: string, options: StopOptions): Promise<void> {
  if ((await powerState(conn, domain, vm)) === 'shutoff') return;
  if (options.mode === 'force') return destroy(conn, domain, vm);

  await conn.call({ operation: 'request guest shutdown', vm }, (h) => h.domainShutdown(domain)).catch((err: unknown) => {
    // It went off between our look and the request: that is what was asked for.
    if ((err as { code?: string }).code !== 'INVALID_POWER_STATE') throw err;
  });
  const timeoutMs = options.timeoutMs ?? DEFAULT_GRACEFUL_TIMEOUT_MS;
  if (await waitForShutoff(conn, domain, vm, Date.now() + timeoutMs, options.signal)) return;
  if (!options.forceOnTimeout) throw new StopTimedOut(vm, conn.uri, timeoutMs);
  await destroy(conn, domain, vm);
}

async function destroy(conn: LibvirtConnection, domain: Domain, vm: string): Promise<void> {
  await conn.call({ operation: 'force off', vm }, (h) => h.domainDestroy(domain)).catch((err: unknown) => {
    if ((err as { code?: string }).code !== 'INVALID_POWER_STATE') throw err;
  });
}

/** Polls until the VM is off or the deadline passes; an abort rejects with the signal's own reason. */
async function waitForShutoff(conn: LibvirtConnection, domain: Domain, vm: string, deadline: number, signal?: AbortSignal): Promise<boolean> {
  for (;;) {
    signal?.throwIfAborted();
    if ((await powerState(conn, domain, vm)) === 'shutoff') return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await delay(Math.min(POLL_MS, left), undefined, { signal }).catch((err: unknown) => {
      // timers/promises wraps the reason in its own AbortError; the caller should get what it aborted with.
      throw signal?.aborted ? signal.reason : err;
    });
  }
}
