/**
 * Power: reading a VM's state, and stopping it the way StopOptions asks (graceful with a deadline,
 * optionally forced after it; or forced at once). A graceful stop returns when libvirt reports the
 * VM stopped (its lifecycle event, api/events.ts); the VM's state is also asked every
 * FALLBACK_POLL_MS, in case the event is missed (a reconnect while the guest shuts down drops the
 * connection's registration).
 */
import { StopTimedOut, VmdrError } from '../errors.js';
import type { PowerState, StopOptions } from '../types.js';
import { VIR_DOMAIN_EVENT } from './api/codes.js';
import type { LibvirtConnection } from './connection.js';
import { powerStateOf } from './power-states.js';

export const DEFAULT_GRACEFUL_TIMEOUT_MS = 60_000;
const FALLBACK_POLL_MS = 1_000;

export async function powerState(conn: LibvirtConnection, vm: string): Promise<PowerState> {
  return powerStateOf(await conn.call({ operation: 'read power state', vm }, 'domainState', vm));
}

/** A VM that is already off stays off and this returns at once. */
export async function stopDomain(conn: LibvirtConnection, vm: string, options: StopOptions): Promise<void> {
  if ((await powerState(conn, vm)) === 'shutoff') return;
  if (options.mode === 'force') return destroy(conn, vm);

  const timeoutMs = options.timeoutMs ?? DEFAULT_GRACEFUL_TIMEOUT_MS;
  // Events name VMs by UUID: `vm` may be a name.
  const { uuid } = await conn.call({ operation: 'look up VM', vm }, 'identifyDomain', vm);
  const stopped = waitForShutoff(conn, vm, uuid, Date.now() + timeoutMs, options.signal);
  try {
    await conn.call({ operation: 'request guest shutdown', vm, requires: 'running' }, 'shutdownDomain', vm).catch((err: unknown) => {
      // It went off between our look and the request: that is what was asked for.
      if (!(err instanceof VmdrError && err.code === 'INVALID_POWER_STATE')) throw err;
      stopped.check();
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
 * Resolves true when the VM is reported stopped or found off, false at the deadline; an abort
 * rejects with the signal's own reason. It starts before the caller asks the guest to stop; a
 * state it cannot read (libvirtd restarting) is asked again at the next poll. `check` asks the
 * state now.
 */
function waitForShutoff(
  conn: LibvirtConnection,
  vm: string,
  uuid: string,
  deadline: number,
  signal?: AbortSignal,
): { done: Promise<boolean>; cancel: () => void; check: () => void } {
  let finish: (stopped: boolean) => void = () => undefined;
  let fail: (err: unknown) => void = () => undefined;
  const done = new Promise<boolean>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  let poll: NodeJS.Timeout | undefined;
  let ended = false;
  const check = () =>
    powerState(conn, vm).then(
      (state) => state === 'shutoff' && end(true),
      () => undefined,
    );
  const ask = () => {
    poll = undefined;
    void check().finally(() => {
      if (!ended) poll = setTimeout(ask, FALLBACK_POLL_MS);
    });
  };
  const unsubscribe = conn.onLifecycle((event) => {
    if (event.uuid !== uuid) return;
    if (event.event === VIR_DOMAIN_EVENT.STOPPED) end(true);
    // The guest has shut down; QEMU may not have ended yet.
    else if (event.event === VIR_DOMAIN_EVENT.SHUTDOWN) void check();
  });
  const onAbort = () => {
    cleanup();
    fail(signal!.reason);
  };
  const timer = setTimeout(() => end(false), Math.max(0, deadline - Date.now()));
  const cleanup = () => {
    ended = true;
    unsubscribe();
    clearTimeout(timer);
    clearTimeout(poll);
    signal?.removeEventListener('abort', onAbort);
  };
  const end = (stopped: boolean) => {
    if (ended) return;
    cleanup();
    finish(stopped);
  };
  if (signal?.aborted) onAbort();
  else {
    signal?.addEventListener('abort', onAbort, { once: true });
    poll = setTimeout(ask, FALLBACK_POLL_MS);
  }
  return { done, cancel: () => end(false), check: () => void check() };
}
