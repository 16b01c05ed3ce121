/**
 * The VMDK descriptor vmdr writes beside a flat extent (hypervisors/vsphere/vmdk.ts): what ESXi
 * reads from it (type, extent, geometry), and how vmdr tells a whole descriptor from a half one.
 */
import assert from 'node:assert/strict';
import { flatExtentName, parseVmdkDescriptor, vmdkDescriptor } from '../../../hypervisors/vsphere/vmdk.js';

const GiB = 1024 ** 3;
const ddb = (text: string, key: string) => new RegExp(`^ddb\\.${key.replace(/\./g, '\\.')} = "([^"]*)"$`, 'm').exec(text)?.[1];

describe('VMDK descriptors (vSphere flat disks)', () => {
  it('describes one flat VMFS extent of the disk in whole sectors, with the geometry ESXi reports', () => {
    const text = vmdkDescriptor({ extent: 'failover-1-vda-flat.vmdk', sizeBytes: 40 * GiB });
    assert.deepEqual(parseVmdkDescriptor(text), {
      createType: 'vmfs',
      extents: [{ access: 'RW', sectors: 40 * GiB / 512, type: 'VMFS', file: 'failover-1-vda-flat.vmdk' }],
    });
    assert.equal(ddb(text, 'adapterType'), 'lsilogic');
    // What ESXi's own tools write for a 40 GiB SCSI disk.
    assert.deepEqual([ddb(text, 'geometry.cylinders'), ddb(text, 'geometry.heads'), ddb(text, 'geometry.sectors')], ['5221', '255', '63']);
    assert.equal(ddb(text, 'virtualHWVersion'), '4');
  });

  it('rounds a size that is not whole sectors up, and caps IDE geometry at 16383 cylinders', () => {
    assert.equal(parseVmdkDescriptor(vmdkDescriptor({ extent: 'x-flat.vmdk', sizeBytes: 1000 }))?.extents[0]?.sectors, 2);
    const ide = vmdkDescriptor({ extent: 'x-flat.vmdk', sizeBytes: 40 * GiB, adapterType: 'ide', hwVersion: 13 });
    assert.deepEqual([ddb(ide, 'adapterType'), ddb(ide, 'geometry.cylinders'), ddb(ide, 'geometry.heads'), ddb(ide, 'virtualHWVersion')], ['ide', '16383', '16', '13']);
  });

  it('finds no whole extent in a descriptor cut short, and no descriptor in other bytes', () => {
    const text = vmdkDescriptor({ extent: 'x-flat.vmdk', sizeBytes: GiB });
    const cut = text.slice(0, text.indexOf('x-flat.vmdk') + 3);
    assert.deepEqual(parseVmdkDescriptor(cut)?.extents, []);
    assert.equal(parseVmdkDescriptor(''), undefined);
    assert.equal(parseVmdkDescriptor('\0\0\0\0'), undefined);
    // ESXi rewrites CID and adds its own keys once a VM has opened the disk: still the same extent.
    const opened = text.replace(/^CID=.*$/m, 'CID=fffffffe') + 'ddb.uuid = "60 00 C2 9a"\nddb.longContentID = "0123456789abcdef0123456789abcdef"\n';
    assert.deepEqual(parseVmdkDescriptor(opened)?.extents, parseVmdkDescriptor(text)?.extents);
  });

  it('names the extent as ESXi does, and refuses an extent name that is not a bare file name', () => {
    assert.equal(flatExtentName('failover-1-vda.vmdk'), 'failover-1-vda-flat.vmdk');
    assert.throws(() => vmdkDescriptor({ extent: '../x-flat.vmdk', sizeBytes: GiB }), TypeError);
    assert.throws(() => vmdkDescriptor({ extent: 'x"-flat.vmdk', sizeBytes: GiB }), TypeError);
  });
});
