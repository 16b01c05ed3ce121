/**
 * What `vmdr status` reports for each protection: where its source and target VMs are and what
 * power state they are in. A site that cannot be reached is reported per row, not thrown: status is
 * what an operator runs when things are already broken.
 */
import type { PowerState } from '../../hypervisors/types.js';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config } from '../config/schema.js';
import type { SiteConnections } from '../sites/connections.js';

export interface VmState {
  site: string;
  vm: string;
  state: PowerState | 'missing' | 'unreachable';
  problem?: string;
}

export interface ProtectionStatus {
  protection: string;
  tenant: string | null;
  rpoSeconds: number;
  source: VmState;
  target: VmState;
}

export async function protectionStatus(config: Config, sites: SiteConnections): Promise<ProtectionStatus[]> {
  return Promise.all(
    config.protections.map(async (p) => ({
      protection: p.name,
      tenant: p.tenant ?? null,
      rpoSeconds: p.rpo / 1000,
      source: await vmState(sites, p.source.site, p.source.vm),
      target: await vmState(sites, p.target.site, p.target.vm),
    })),
  );
}

async function vmState(sites: SiteConnections, site: string, vm: string): Promise<VmState> {
  try {
    const adapter = await sites.adapter(site);
    return { site, vm, state: (await adapter.getVm(vm)).powerState };
  } catch (err) {
    if (!(err instanceof VmdrError)) throw err;
    if (err.code === 'VM_NOT_FOUND') return { site, vm, state: 'missing' };
    if (err.code === 'HYPERVISOR_UNREACHABLE') return { site, vm, state: 'unreachable', problem: err.message };
    throw err;
  }
}
