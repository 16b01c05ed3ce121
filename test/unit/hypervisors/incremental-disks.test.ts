/**
 * Which disk an incremental reads how, from a checkpoint's XML as libvirt 9 writes it and the
 * bitmaps QEMU reports on the raw disks' nodes: the reasons are what the cycle tells the user.
 */
import assert from 'node:assert/strict';
import { checkpointDisks, readsFrom, type BackupDisk } from '../../../hypervisors/libvirt/incremental-disks.js';

const CHECKPOINT = `<domaincheckpoint>
  <name>vmdr-web-1</name>
  <creationTime>1764612000</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='vmdr-web-1'/>
    <disk name='vdb' checkpoint='no'/>
  </disks>
  <domain type='qemu'><name>web</name></domain>
</domaincheckpoint>`;

const disks: BackupDisk[] = [
  { target: 'vda', image: '/img/vda.qcow2', format: 'qcow2', index: '3' },
  { target: 'vdb', image: '/img/vdb.raw', format: 'raw', index: '2' },
  { target: 'vdc', image: '/dev/vg/data', format: 'raw', index: '1' },
  { target: 'vdd', image: '/img/vdd.qcow2', format: 'qcow2', index: '4' },
];

describe('incremental disks: which disk is read by bitmap, whole, or by hashes', () => {
  it('reads the disks a checkpoint names and those it holds a bitmap of', () => {
    const { present, bitmaps } = checkpointDisks(CHECKPOINT);
    assert.deepEqual([...present], ['vda', 'vdb']);
    assert.deepEqual([...bitmaps], ['vda']);
  });

  it('a qcow2 disk by libvirt\'s bitmap, a raw disk by its transient bitmap, a disk added since copied whole', () => {
    const reads = readsFrom(disks, 'vmdr-web-1', checkpointDisks(CHECKPOINT), [
      { target: 'vdb', node: 'libvirt-2-format', bitmaps: new Set(['vmdr-web-1', 'vmdr-web-2']) },
      { target: 'vdc', node: 'libvirt-1-format', bitmaps: new Set(['vmdr-web-2']) },
    ]);
    assert.deepEqual(
      reads.map((r) => [r.disk.target, r.transient ?? false, r.untracked?.plan ?? 'bitmap']),
      [['vda', false, 'bitmap'], ['vdb', true, 'bitmap'], ['vdc', false, 'full'], ['vdd', false, 'full']],
    );
    assert.equal(reads[3]!.untracked!.reason, 'disk vdd joined the VM after checkpoint vmdr-web-1: copied whole');
  });

  it('a raw disk the checkpoint knew whose bitmap is gone (QEMU restarted) is compared by hashes, and says why', () => {
    const [, vdb] = readsFrom(disks.slice(0, 2), 'vmdr-web-1', checkpointDisks(CHECKPOINT), [{ target: 'vdb', node: 'libvirt-1-format', bitmaps: new Set() }]);
    assert.equal(vdb!.untracked!.plan, 'resync');
    assert.match(vdb!.untracked!.reason, /^disk vdb is raw and its dirty bitmap of checkpoint vmdr-web-1, kept in QEMU's memory, is gone \(QEMU restarted since/);
  });
});
