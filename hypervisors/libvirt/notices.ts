/**
 * libvirt's events in the adapter interface's words (HypervisorNotice): a VM that left the
 * running state, and the connection closed. Events that leave a VM running (defined, started,
 * resumed, a shutdown the guest began but has not finished) tell nothing a beat needs.
 */
import type { HypervisorNotice } from '../types.js';
import { CLOSE_REASONS, VIR_DOMAIN_EVENT, VIR_DOMAIN_EVENT_STOPPED } from './api/codes.js';
import type { LifecycleEvent } from './api/events.js';
import type { LibvirtConnection } from './connection.js';

const STOPPED_WHY: Record<number, string> = {
  [VIR_DOMAIN_EVENT_STOPPED.SHUTDOWN]: 'shut down',
  [VIR_DOMAIN_EVENT_STOPPED.DESTROYED]: 'destroyed',
  [VIR_DOMAIN_EVENT_STOPPED.CRASHED]: 'crashed',
  [VIR_DOMAIN_EVENT_STOPPED.MIGRATED]: 'migrated away',
  [VIR_DOMAIN_EVENT_STOPPED.SAVED]: 'saved',
  [VIR_DOMAIN_EVENT_STOPPED.FAILED]: 'failed',
  [VIR_DOMAIN_EVENT_STOPPED.FROM_SNAPSHOT]: 'reverted to a snapshot',
};

export function noticeOf(e: LifecycleEvent): HypervisorNotice | undefined {
  const vm = (state: Extract<HypervisorNotice, { kind: 'vm' }>['state'], why: string): HypervisorNotice => ({ kind: 'vm', vm: e.name, id: e.uuid, state, why, at: e.at });
  switch (e.event) {
    case VIR_DOMAIN_EVENT.STOPPED:
      return vm('shutoff', STOPPED_WHY[e.detail] ?? `stopped (libvirt detail ${e.detail})`);
    case VIR_DOMAIN_EVENT.CRASHED:
      return vm('crashed', 'its guest crashed');
    case VIR_DOMAIN_EVENT.SUSPENDED:
      return vm('paused', 'paused');
    case VIR_DOMAIN_EVENT.PMSUSPENDED:
      return vm('paused', 'suspended by its guest');
    case VIR_DOMAIN_EVENT.UNDEFINED:
      return vm('missing', 'undefined');
    default:
      return undefined;
  }
}

/** HypervisorAdapter.watchVms over one connection's events. */
export function watchNotices(conn: LibvirtConnection, listener: (notice: HypervisorNotice) => void): () => void {
  const offLifecycle = conn.onLifecycle((e) => {
    const notice = noticeOf(e);
    if (notice) listener(notice);
  });
  const offClosed = conn.onClosed((reason) => {
    // This process's own closing is no news of the host.
    if (CLOSE_REASONS[reason] !== 'closed by this process') listener({ kind: 'closed', why: CLOSE_REASONS[reason] ?? `reason ${reason}`, at: Date.now() });
  });
  return () => {
    offLifecycle();
    offClosed();
  };
}
