/**
 * The identity a target boots with at the DR site: its NICs' MACs and networks, its hostname and
 * addresses, from the config. It does not depend on the recovery point, so provisioning gives it
 * to the target ahead of time and a failover only checks it is still in place. Its instance id
 * carries a digest of the identity: the same config gives the same id (the adapter finds its seed
 * in place and changes nothing), any change gives a new one (a new seed, and the guest's
 * cloud-init applies it again as a new instance).
 */
import { createHash } from 'node:crypto';
import type { GuestIdentity, HypervisorAdapter } from '../../hypervisors/types.js';
import type { Protection } from '../config/schema.js';

export interface AppliedIdentity {
  instanceId: string;
  hostname: string;
  /** Where the adapter keeps it, when it is a file. */
  seed?: string;
  /** written: the VM got it now; in-place: it already had this very identity, nothing changed. */
  action: 'written' | 'in-place';
}

/**
 * `p.target` as this boot sees it: the pre-staged target, or a drill's own VM on its bubble
 * network (its name and network put in the id, so a drill's seed is never the target's).
 */
export function targetIdentity(p: Protection): GuestIdentity {
  const hostname = p.target.hostname ?? p.target.vm;
  const nics = p.target.nics.map((nic) => ({ mac: nic.mac?.toLowerCase(), network: nic.network, addresses: nic.addresses, gateway: nic.gateway, dns: nic.dns }));
  // Keys in a fixed order: the digest must not change with the order the config was parsed in.
  // A NIC without a MAC keeps the VM's own, which only a hand edit of the target would change.
  const canonical = JSON.stringify([p.target.vm, hostname, nics.map((n) => [n.mac ?? null, n.network, n.addresses, n.gateway ?? null, n.dns ?? null])]);
  const digest = createHash('sha256').update(canonical).digest('hex').slice(0, 16);
  return { instanceId: `vmdr-${p.target.vm}-${digest}`, hostname, nics };
}

/** On the (stopped) VM `p.target.vm`: written only when it does not have this identity already. */
export async function giveIdentity(adapter: HypervisorAdapter, p: Protection): Promise<AppliedIdentity> {
  const identity = targetIdentity(p);
  const applied = await adapter.applyGuestIdentity(p.target.vm, identity);
  return { instanceId: identity.instanceId, hostname: identity.hostname, ...(applied.seed ? { seed: applied.seed } : {}), action: applied.written ? 'written' : 'in-place' };
}
