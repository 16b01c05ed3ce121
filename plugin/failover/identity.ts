/**
 * Gives a target VM the network identity its protection asks for, before it boots: the NIC MACs
 * and networks in the VM definition, and the in-guest hostname and addresses through a NoCloud
 * seed with a fresh instance id (a new instance id is what makes cloud-init apply it again).
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import type { Protection } from '../config/schema.js';
import { protectionDir } from '../replication/layout.js';
import { writeIdentitySeed, type GuestIdentity } from './identity-seed.js';

export interface AppliedIdentity {
  instanceId: string;
  seed: string;
  identity: GuestIdentity;
}

/** Sets MACs and networks on the (stopped) target, writes its seed and attaches it. */
export async function applyIdentity(adapter: HypervisorAdapter, p: Protection, storage: string): Promise<AppliedIdentity> {
  let vm = await adapter.getVm(p.target.vm);
  for (const [i, wanted] of p.target.nics.entries()) {
    const nic = vm.nics[i];
    if (!nic) continue;
    if ((wanted.mac && nic.mac !== wanted.mac) || nic.network !== wanted.network) {
      vm = await adapter.setNicIdentity(vm.name, nic.mac, { mac: wanted.mac, network: wanted.network });
    }
  }
  const instanceId = `vmdr-${p.name}-${randomUUID()}`;
  const identity: GuestIdentity = {
    instanceId,
    hostname: p.target.hostname ?? p.target.vm,
    // The seed names each NIC by the MAC it now has: a NIC without a configured MAC keeps the
    // one the hypervisor gave it.
    nics: p.target.nics.map((nic, i) => ({
      mac: vm.nics[i]?.mac ?? nic.mac ?? '',
      addresses: nic.addresses,
      gateway: nic.gateway,
      dns: nic.dns,
    })),
  };
  const seed = join(protectionDir(storage, p.name), `seed-${instanceId}.iso`);
  await writeIdentitySeed(seed, identity);
  await adapter.attachIdentitySeed(vm.name, seed);
  return { instanceId, seed, identity };
}
