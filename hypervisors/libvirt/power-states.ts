/** libvirt's domain states (virDomainState) in vmdr's words. */
import type { PowerState } from '../types.js';
import { VIR_DOMAIN_STATE } from './api/codes.js';

export function powerStateOf(state: number): PowerState {
  switch (state) {
    case VIR_DOMAIN_STATE.RUNNING:
    case VIR_DOMAIN_STATE.BLOCKED:
      return 'running';
    case VIR_DOMAIN_STATE.PAUSED:
      return 'paused';
    case VIR_DOMAIN_STATE.SHUTDOWN:
      return 'shutting-down';
    case VIR_DOMAIN_STATE.SHUTOFF:
      return 'shutoff';
    case VIR_DOMAIN_STATE.CRASHED:
      return 'crashed';
    case VIR_DOMAIN_STATE.PMSUSPENDED:
      return 'suspended';
    default:
      return 'unknown';
  }
}
