/**
 * How a pre-staged target has drifted from its source: a disk the source has and the target lacks
 * (added to the source after the target was made), a disk of another size (grown or shrunk), a
 * disk the source no longer has. Read by `vmdr status`, acted on by `vmdr target provision`.
 */
import type { DiskInfo, VmInfo } from '../../hypervisors/types.js';

export interface DiskDrift {
  disk: string;
  /** missing: on the source, not on the target; size: both, of other sizes; extra: on the target only. */
  kind: 'missing' | 'size' | 'extra';
  sourceBytes?: number;
  targetBytes?: number;
}

/** The disks that carry the VM's data: not a cdrom, not the identity seed vmdr attaches for a boot. */
export function dataDisks(vm: VmInfo): DiskInfo[] {
  return vm.disks.filter((d) => d.device === 'disk' && !d.identitySeed);
}

/** Empty when the target has the source's disks at the source's sizes (sizes compared where both are known). */
export function targetDrift(source: VmInfo, target: VmInfo): DiskDrift[] {
  const theirs = new Map(dataDisks(target).map((d) => [d.target, d]));
  const ours = dataDisks(source);
  const drift: DiskDrift[] = [];
  for (const d of ours) {
    const t = theirs.get(d.target);
    const sizes = { ...(d.capacityBytes !== undefined ? { sourceBytes: d.capacityBytes } : {}), ...(t?.capacityBytes !== undefined ? { targetBytes: t.capacityBytes } : {}) };
    if (!t) drift.push({ disk: d.target, kind: 'missing', ...sizes });
    else if (d.capacityBytes !== undefined && t.capacityBytes !== undefined && d.capacityBytes !== t.capacityBytes) drift.push({ disk: d.target, kind: 'size', ...sizes });
  }
  const sourceTargets = new Set(ours.map((d) => d.target));
  for (const t of theirs.values()) {
    if (!sourceTargets.has(t.target)) drift.push({ disk: t.target, kind: 'extra', ...(t.capacityBytes !== undefined ? { targetBytes: t.capacityBytes } : {}) });
  }
  return drift;
}

