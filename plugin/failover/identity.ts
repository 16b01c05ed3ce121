/**
 * Gives a target VM the network identity its protection asks for, before it boots: the NIC MACs
 * and networks, and the in-guest hostname and addresses, through the DR adapter
 * (applyGuestIdentity), with a fresh instance id (a new instance id is what makes the guest apply
 * it again).
 */
import { randomUUID } from 'node:crypto';
import type { GuestIdentity, HypervisorAdapter } from '../../hypervisors/types.js';
import type { Protection } from '../config/schema.js';

export interface AppliedIdentity {
  instanceId: string;
  hostname: string;
  /** Where the adapter keeps it, when it is a file. */
  seed?: string;
}

export function guestIdentity(p: Protection): GuestIdentity {
  return {
    instanceId: `vmdr-${p.name}-${randomUUID()}`,
    hostname: p.target.hostname ?? p.target.vm,
    nics: p.target.nics.map((nic) => ({ mac: nic.mac, network: nic.network, addresses: nic.addresses, gateway: nic.gateway, dns: nic.dns })),
  };
}

/** On the (stopped) target `p.target.vm`. */
export async function applyIdentity(adapter: HypervisorAdapter, p: Protection): Promise<AppliedIdentity> {
  const identity = guestIdentity(p);
  const applied = await adapter.applyGuestIdentity(p.target.vm, identity);
  return { instanceId: identity.instanceId, hostname: identity.hostname, ...(applied.seed ? { seed: applied.seed } : {}) };
}
