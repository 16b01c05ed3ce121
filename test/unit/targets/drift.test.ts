/** What counts as a target's drift from its source: the disks that carry data, by name and size. */
import assert from 'node:assert/strict';
import type { DiskInfo, VmInfo } from '../../../hypervisors/types.js';
import { targetDrift } from '../../../plugin/targets/drift.js';

const MiB = 1024 * 1024;
const vm = (name: string, disks: DiskInfo[]): VmInfo => ({ name, id: name, powerState: 'shutoff', memoryMiB: 256, vcpus: 1, disks, nics: [], labels: {} });
const disk = (target: string, capacityBytes?: number, extra: Partial<DiskInfo> = {}): DiskInfo => ({
  target,
  device: 'disk',
  ...(capacityBytes !== undefined ? { capacityBytes } : {}),
  ...extra,
});

describe('target drift', () => {
  it('is empty when the target has the source data disks at their sizes; cdroms and the identity seed do not count', () => {
    const source = vm('web', [disk('vda', 64 * MiB), disk('hdc', undefined, { device: 'cdrom' })]);
    const target = vm('web-dr', [disk('vda', 64 * MiB), disk('vdb', MiB, { identitySeed: true })]);
    assert.deepEqual(targetDrift(source, target), []);
  });

  it('names a disk missing on the target, one of another size, and one the source no longer has', () => {
    const source = vm('web', [disk('vda', 64 * MiB), disk('vdb', 2048 * MiB), disk('vdc', 8 * MiB)]);
    const target = vm('web-dr', [disk('vda', 64 * MiB), disk('vdb', 1024 * MiB), disk('vdd', 4 * MiB)]);
    assert.deepEqual(targetDrift(source, target), [
      { disk: 'vdb', kind: 'size', sourceBytes: 2048 * MiB, targetBytes: 1024 * MiB },
      { disk: 'vdc', kind: 'missing', sourceBytes: 8 * MiB },
      { disk: 'vdd', kind: 'extra', targetBytes: 4 * MiB },
    ]);
  });

  it('does not compare sizes it does not know', () => {
    assert.deepEqual(targetDrift(vm('web', [disk('vda')]), vm('web-dr', [disk('vda', 64 * MiB)])), []);
  });
});
