/**
 * What the vSphere adapter sends, where the simulator would accept more than vCenter: the
 * customization spec (masks, DHCP for NICs the identity leaves out, the domain LinuxPrep needs),
 * vSwitch names within ESXi's limit, and device specs in the WSDL's element order, as they go on
 * the wire (buildRequest).
 */
import assert from 'node:assert/strict';
import { customizationSpec, subnetMask } from '../../../hypervisors/vsphere/customization.js';
import { diskAddSpec, diskNames, parseSlot, readHardware } from '../../../hypervisors/vsphere/devices.js';
import { vswitchNameFor } from '../../../hypervisors/vsphere/network.js';
import { buildRequest, moRef } from '../../../hypervisors/vsphere/soap.js';

describe('vSphere adapter specs', () => {
  it('subnet masks from prefixes', () => {
    assert.deepEqual([0, 8, 16, 20, 24, 31, 32].map(subnetMask), ['0.0.0.0', '255.0.0.0', '255.255.0.0', '255.255.240.0', '255.255.255.0', '255.255.255.254', '255.255.255.255']);
  });

  it('a customization: LinuxPrep with host and domain, a fixed address per NIC given one, DHCP for the others', () => {
    const spec = customizationSpec(
      { instanceId: 'i', hostname: 'web1.dr.example', nics: [{ addresses: ['10.0.0.5/24'], gateway: '10.0.0.1', dns: ['10.0.0.2', '10.0.0.3'] }] },
      ['00:50:56:00:00:01', '00:50:56:00:00:02'],
    );
    assert.deepEqual(spec, {
      identity: { _type: 'CustomizationLinuxPrep', hostName: { _type: 'CustomizationFixedName', name: 'web1' }, domain: 'dr.example' },
      globalIPSettings: { dnsSuffixList: ['dr.example'], dnsServerList: ['10.0.0.2', '10.0.0.3'] },
      nicSettingMap: [
        { macAddress: '00:50:56:00:00:01', adapter: { ip: { _type: 'CustomizationFixedIp', ipAddress: '10.0.0.5' }, subnetMask: '255.255.255.0', gateway: ['10.0.0.1'], dnsServerList: ['10.0.0.2', '10.0.0.3'] } },
        { macAddress: '00:50:56:00:00:02', adapter: { ip: { _type: 'CustomizationDhcpIpGenerator' } } },
      ],
    });
    const bare = customizationSpec({ instanceId: 'i', hostname: 'web1', nics: [] }, []) as { identity: { domain: string } };
    assert.equal(bare.identity.domain, 'localdomain', 'LinuxPrep needs a domain');
  });

  it('vSwitch names: vmdr- once, at most 31 characters, distinct for long names', () => {
    assert.equal(vswitchNameFor('bubble'), 'vmdr-bubble');
    assert.equal(vswitchNameFor('vmdr-drill-abc123'), 'vmdr-drill-abc123');
    const a = vswitchNameFor('vmdr-drill-abc123-a-tenant-with-a-long-name');
    const b = vswitchNameFor('vmdr-drill-abc123-a-tenant-with-a-long-nam2');
    assert.ok(a.length <= 31 && b.length <= 31 && a !== b && a.startsWith('vmdr-'), `${a} ${b}`);
  });

  it('a placeholder disk goes on the wire in WSDL order, thin, of its size', () => {
    const spec = diskAddSpec({ path: '/var/lib/vmdr/x.qcow2', sizeBytes: 2 * 1024 ** 3 }, { key: -200, controllerKey: -100, unit: 0, datastore: moRef('Datastore', 'ds-1'), placeholder: '[ds1] web/web-vda.vmdk' });
    const xml = buildRequest('ReconfigVM_Task', moRef('VirtualMachine', 'vm-1'), { spec: { deviceChange: [spec] } });
    const order = ['<operation>add</operation>', '<fileOperation>create</fileOperation>', '<device xsi:type="VirtualDisk">', '<key>-200</key>', '<backing xsi:type="VirtualDiskFlatVer2BackingInfo">', '<fileName>[ds1] web/web-vda.vmdk</fileName>', '<datastore type="Datastore">ds-1</datastore>', '<diskMode>persistent</diskMode>', '<thinProvisioned>true</thinProvisioned>', '<controllerKey>-100</controllerKey>', '<unitNumber>0</unitNumber>', '<capacityInKB>2097152</capacityInKB>', '<capacityInBytes>2147483648</capacityInBytes>'];
    let at = 0;
    for (const piece of order) {
      const found = xml.indexOf(piece, at);
      assert.ok(found >= at, `${piece} after position ${at} in ${xml}`);
      at = found;
    }
    // A datastore file is attached as it is: no file operation, no new file.
    const attach = JSON.stringify(diskAddSpec({ path: '[ds1] boot/failover-1-vda.vmdk' }, { key: -1, controllerKey: 1000, unit: 1, datastore: moRef('Datastore', 'ds-1') }));
    assert.ok(!attach.includes('fileOperation') && attach.includes('[ds1] boot/failover-1-vda.vmdk'));
  });

  it('disks are named from extraConfig (last value wins, an empty one forgets) and reported in slot order', () => {
    const names = diskNames([
      { key: 'vmdr.disk.scsi0:0', value: 'vdz' },
      { key: 'vmdr.disk.scsi0:0', value: 'vda' },
      { key: 'vmdr.disk.scsi0:2', value: 'vdc' },
      { key: 'vmdr.disk.scsi0:2', value: '' },
      { key: 'other', value: 'x' },
    ]);
    assert.deepEqual([...names], [['scsi0:0', 'vda']]);
    const hw = readHardware(
      [
        { _type: 'ParaVirtualSCSIController', key: '1000', busNumber: '0' },
        { _type: 'VirtualDisk', key: '2002', controllerKey: '1000', unitNumber: '2', capacityInKB: '1024', backing: { fileName: '[ds] a/b.vmdk' } },
        { _type: 'VirtualDisk', key: '2000', controllerKey: '1000', unitNumber: '0', capacityInKB: '2048', backing: { fileName: '[ds] a/a.vmdk' } },
        { _type: 'VirtualVmxnet3', key: '4000', macAddress: '00:50:56:AA:BB:CC', backing: { deviceName: 'VM Network' } },
      ],
      names,
      new Map(),
    );
    assert.deepEqual(hw.disks.map((d) => [d.target, d.slot, d.capacityBytes]), [
      ['vda', 'scsi0:0', 2 * 1024 * 1024],
      ['scsi0:2', 'scsi0:2', 1024 * 1024],
    ]);
    assert.deepEqual(hw.nics.map((n) => [n.mac, n.network, n.model]), [['00:50:56:aa:bb:cc', 'VM Network', 'vmxnet3']]);
    assert.deepEqual([...(hw.scsi?.used ?? [])].sort(), [0, 2]);
    assert.deepEqual(parseSlot('scsi1:3'), { bus: 1, unit: 3 });
    assert.equal(parseSlot('vda'), undefined);
  });
});
