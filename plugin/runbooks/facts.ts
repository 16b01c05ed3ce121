/**
 * What a runbook's scripts and templates learn about the run and its VMs: the facts a script
 * gets in its environment (VMDR_*), the same for a real run and a dry run.
 */
import type { Protection } from '../config/schema.js';
import type { ChosenPoint } from '../failover/recovery-point.js';

export interface RunFacts {
  id: string;
  kind: string;
  plan: string;
}

/** One VM of a group as the run brings it up on the DR site. */
export interface VmFacts {
  protection: string;
  group: string;
  sourceVm: string;
  /** The DR VM: the pre-staged target, or a drill's throwaway VM. */
  vm: string;
  hostname: string;
  /** The DR addresses with their prefix (192.0.2.10/24). */
  addresses: string[];
  macs: string[];
  /** The point it booted; absent before its group started. */
  point?: Pick<ChosenPoint, 'id' | 'time'>;
}

export function runEnv(run: RunFacts, step: string): Record<string, string> {
  return { VMDR_RUN_ID: run.id, VMDR_FAILOVER_KIND: run.kind, VMDR_PLAN: run.plan, VMDR_STEP: step };
}

export function vmEnv(vm: VmFacts): Record<string, string> {
  return {
    VMDR_GROUP: vm.group,
    VMDR_PROTECTION: vm.protection,
    VMDR_SOURCE_VM: vm.sourceVm,
    VMDR_VM: vm.vm,
    VMDR_HOSTNAME: vm.hostname,
    VMDR_IPS: vm.addresses.map((a) => a.split('/')[0]).join(' '),
    VMDR_ADDRESSES: vm.addresses.join(' '),
    VMDR_MACS: vm.macs.join(' '),
    VMDR_POINT: vm.point?.id ?? '',
    VMDR_POINT_TIME: vm.point?.time ?? '',
  };
}

/** A VM's facts as the config gives them; the run fills in the MACs the VM really has and its point. */
export function configFacts(p: Protection, group: string, vm: string): VmFacts {
  return {
    protection: p.name,
    group,
    sourceVm: p.source.vm,
    vm,
    hostname: p.target.hostname ?? p.target.vm,
    addresses: p.target.nics.flatMap((n) => n.addresses),
    macs: p.target.nics.flatMap((n) => (n.mac ? [n.mac] : [])),
  };
}
