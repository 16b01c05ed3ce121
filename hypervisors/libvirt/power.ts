/**
 * Power: reading a VM's state, and stopping it the way StopOptions asks (graceful with a deadline,
 * optionally forced after it; or forced at once). A graceful stop waits for libvirt's "stopped"
 * event of the VM, not by asking its state over and over.
 */
import { StopTimedOut, VmdrError } from '../errors.js';
import type { PowerState, StopOptions } from '../types.js';
import { VIR_DOMAIN_EVENT } from './api/codes.js';
import { libvirtEvents, type LifecycleEvent } from './api/events.js';
import type { LibvirtConnection } from './connection.js';
import { powerStateOf } from './power-states.js';

export const DEFAULT_GRACEFUL_TIMEOUT_MS = 60_000;
/**
 * Events of a connection that closed and reopened during the wait are lost; the state is read
 * again this often so such a wait still ends.
 */
const RECHECK_MS = 10_000;

export async function powerState(conn: LibvirtConnection, vm: string): Promise<PowerState> {
  return powerStateOf(await conn.call({ operation: 'read power state', vm }, 'domainState', vm));
}

/** A VM that is already off stays off and this returns at once. */
export async function stopDomain(conn: LibvirtConnection, vm: string, uuid: string, options: StopOptions): Promise<void> {
  if ((await powerState(conn, vm)) === 'shutoff') return;
  if (options.mode === 'force') return destroy(conn, vm);

  const timeoutMs = options.timeoutMs ?? DEFAULT_GRACEFUL_TIMEOUT_MS;
  const stopped = waitForShutoff(conn, vm, uuid, Date.now() + timeoutMs, options.signal);
  try {
    await conn.call({ operation: 'request guest shutdown', vm, requires: 'running' }, 'shutdownDomain', vm).catch((err: unknown) => {
      // It went off between our look and the request: that is what was asked for.
      if (!(err instanceof VmdrError && err.code === 'INVALID_POWER_STATE')) throw err;
    });
  } catch (err) {
    stopped.cancel();
    throw err;
  }
  if (await stopped.done) return;
  if (!options.forceOnTimeout) throw new StopTimedOut(vm, conn.uri, timeoutMs);
  await destroy(conn, vm);
}

async function destroy(conn: LibvirtConnection, vm: string): Promise<void> {
  await conn.call({ operation: 'force off', vm, requires: 'running' }, 'destroyDomain', vm).catch((err: unknown) => {
    if (!(err instanceof VmdrError && err.code === 'INVALID_POWER_STATE')) throw err;
  });
}

/**
 * Resolves true when the VM stops (its event, or a state read finding it off), false at the
 * deadline; an abort rejects with the signal's own reason. Listening starts before the caller
 * asks the guest to stop, so the event cannot slip past.
 */
function waitForShutoff(conn: LibvirtConnection, vm: string, uuid: string, deadline: number, signal?: AbortSignal): { done: Promise<boolean>; cancel: () => void } {
  let finish: (stopped: boolean) => void = () => undefined;
  let fail: (err: unknown) => void = () => undefined;
  const done = new Promise<boolean>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const onEvent = (event: LifecycleEvent) => {
    if (event.uuid === uuid && event.event === VIR_DOMAIN_EVENT.STOPPED && conn.owns(event.conn)) end(true);
  };
  const recheck = () =>
    void powerState(conn, vm).then(
      (state) => state === 'shutoff' && end(true),
      () => undefined,
    );
  const onAbort = () => {
    cleanup();
    fail(signal!.reason);
  };
  const timer = setTimeout(() => end(false), Math.max(0, deadline - Date.now()));
  const rechecks = setInterval(recheck, RECHECK_MS);
  const cleanup = () => {
    clearTimeout(timer);
    clearInterval(rechecks);
    libvirtEvents.off('lifecycle', onEvent);
    signal?.removeEventListener('abort', onAbort);
  };
  const end = (stopped: boolean) => {
    cleanup();
    finish(stopped);
  };
  if (signal?.aborted) onAbort();
  else {
    signal?.addEventListener('abort', onAbort, { once: true });
    libvirtEvents.on('lifecycle', onEvent);
  }
  return { done, cancel: () => end(false) };
}
