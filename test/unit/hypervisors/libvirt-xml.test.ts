/**
 * libvirt's own XML is read without the validator's second pass; what the parser alone would let
 * through (a text cut short, two roots, garbage) is still refused, saying what was read and why.
 */
import assert from 'node:assert/strict';
import { HypervisorOperationFailed } from '../../../hypervisors/errors.js';
import { parseDomainXml } from '../../../hypervisors/libvirt/domain-xml.js';
import { parseLibvirtXml } from '../../../hypervisors/libvirt/xml.js';

const DOMAIN = `<domain type='qemu'>
  <name>web1</name>
  <uuid>0b9b1e2c-6c1f-4a4e-9c77-3b1f0c3f7a10</uuid>
  <memory unit='KiB'>262144</memory>
  <vcpu placement='static'>1</vcpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/vmdr/web1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:AB:CD:01'/>
      <source network='dr-net'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
`;

describe("libvirt's own XML, read without the validator", () => {
  it('reads a domain as before: name, memory, disks, NICs', () => {
    const vm = parseDomainXml(DOMAIN, 'shutoff', 'qemu:///system');
    assert.equal(vm.name, 'web1');
    assert.equal(vm.memoryMiB, 256);
    assert.deepEqual(vm.disks, [{ target: 'vda', device: 'disk', path: '/var/lib/vmdr/web1.qcow2', format: 'qcow2', bus: 'virtio' }]);
    assert.deepEqual(vm.nics, [{ mac: '52:54:00:ab:cd:01', network: 'dr-net', model: 'virtio' }]);
  });

  const bad: [string, string, RegExp][] = [
    ['cut short', DOMAIN.slice(0, DOMAIN.indexOf('</devices>')), /ends before its root element <domain> is closed/],
    ['cut inside a tag', DOMAIN.slice(0, DOMAIN.indexOf("<source file='") + 20), /.+/],
    ['two roots', `${DOMAIN}<domain/>`, /more than one root element/],
    ['not XML', 'libvirt: internal error', /no root element/],
    ['empty', '', /no root element/],
  ];
  for (const [what, text, why] of bad) {
    it(`refuses domain XML ${what}, naming the host and what it read`, () => {
      assert.throws(
        () => parseDomainXml(text, 'running', 'qemu:///system', 'web1'),
        (err: unknown) => {
          assert.ok(err instanceof HypervisorOperationFailed);
          assert.match(err.message, /^read the domain XML of VM "web1" on qemu:\/\/\/system: libvirt returned XML that does not parse \(/);
          assert.match(err.message, why);
          return true;
        },
      );
    });
  }

  it('a checkpoint or backup XML that does not parse says which one', () => {
    assert.throws(() => parseLibvirtXml('<domaincheckpoint><name>cp1</name>', 'checkpoint XML'), /libvirt returned malformed checkpoint XML: the text ends before its root element <domaincheckpoint> is closed/);
    assert.equal(parseLibvirtXml('<domainbackup/>\n', 'backup XML').name, 'domainbackup');
  });
});
