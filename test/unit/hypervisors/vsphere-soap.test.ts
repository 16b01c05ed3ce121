/**
 * The vSphere SOAP envelopes as the wire sees them: every value escaped, elements in the caller's
 * (the WSDL's) order, xsi:type and MoRef conventions both ways, faults read by type; and vsphere://
 * URIs read as a user writes them, with passwords refused wherever they do not belong.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { parseVsphereUri, readPassword } from '../../../hypervisors/vsphere/endpoint.js';
import { asArray, buildRequest, moRef, MoRef, parseResponse, SoapFault, SoapValueInvalid } from '../../../hypervisors/vsphere/soap.js';
import { rejectsWith } from '../../helpers/assertions.js';

const HOSTILE = `<&>"' ]]> &amp; é`;

/** What a SOAP server's own XML parser reads from our request body. */
function serverReads(xml: string): Record<string, any> {
  const parsed = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', parseTagValue: false, trimValues: false, preserveOrder: false }).parse(xml);
  return parsed['soapenv:Envelope']['soapenv:Body'];
}

const envelope = (inner: string) =>
  `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soapenv:Body>${inner}</soapenv:Body></soapenv:Envelope>`;

describe('vSphere SOAP envelopes', () => {
  it('escapes every value and attribute, so a name with markup in it reaches the server as that name', () => {
    const xml = buildRequest('Rename_Task', moRef('VirtualMachine', `vm-1"><x a="`), { newName: HOSTILE });
    assert.ok(!xml.includes(HOSTILE) && !xml.includes('<x a='), xml);
    const body = serverReads(xml);
    assert.equal(body.Rename_Task.newName, HOSTILE);
    assert.equal(body.Rename_Task._this['#text'], `vm-1"><x a="`);
    assert.equal(body.Rename_Task._this['@type'], 'VirtualMachine');
    assert.equal(body.Rename_Task['@xmlns'], 'urn:vim25');
  });

  it('keeps the caller’s element order, repeats arrays, leaves undefined out and writes xsi:type and MoRefs', () => {
    const xml = buildRequest('CreateVM_Task', moRef('Folder', 'group-v3'), {
      config: {
        name: 'web1',
        guestId: 'otherGuest',
        annotation: undefined,
        files: { vmPathName: '[LocalDS_0]' },
        numCPUs: 2,
        memoryMB: 512,
        deviceChange: [
          { operation: 'add', device: { _type: 'VirtualE1000', key: -1, addressType: 'generated' } },
          { operation: 'add', device: { _type: 'VirtualVmxnet3', key: -2 } },
        ],
        extraConfig: [{ key: 'vmdr.role', value: { _type: 'xsd:string', _value: 'target' } }],
      },
      pool: moRef('ResourcePool', 'resgroup-1'),
      host: undefined,
    });
    const config = /<config>(.*)<\/config>/.exec(xml)![1]!;
    const order = [...config.matchAll(/<(\w+)[ >]/g)].map((m) => m[1]).filter((n) => ['name', 'guestId', 'files', 'numCPUs', 'memoryMB', 'deviceChange', 'extraConfig'].includes(n!));
    assert.deepEqual([...new Set(order)], ['name', 'guestId', 'files', 'numCPUs', 'memoryMB', 'deviceChange', 'extraConfig']);
    assert.ok(!xml.includes('annotation') && !xml.includes('<host'), 'undefined members are left out');
    assert.equal(xml.match(/<deviceChange>/g)?.length, 2);
    assert.match(xml, /<device xsi:type="VirtualE1000"><key>-1<\/key><addressType>generated<\/addressType><\/device>/);
    assert.match(xml, /<value xsi:type="xsd:string">target<\/value>/);
    assert.match(xml, /<pool type="ResourcePool">resgroup-1<\/pool>/);
    assert.match(xml, /xmlns:xsi="http:\/\/www.w3.org\/2001\/XMLSchema-instance"/);
  });

  it('refuses a value XML cannot carry and a key that is not an element name, naming where', () => {
    assert.throws(() => buildRequest('Rename_Task', moRef('VirtualMachine', 'vm-1'), { newName: 'a\u0001b' }), (e: unknown) => e instanceof SoapValueInvalid && /Rename_Task.newName/.test(e.message));
    assert.throws(() => buildRequest('X', moRef('Folder', 'f'), { spec: { '@_evil': 'x' } }), SoapValueInvalid);
    assert.throws(() => buildRequest('X', moRef('Folder', 'f'), { spec: { 'a b': 'x' } }), SoapValueInvalid);
  });

  it('parses answers: MoRefs, xsi:type kept as _type, arrays of ArrayOf…, strings left as strings, entities decoded', () => {
    const result = parseResponse(
      'RetrievePropertiesEx',
      envelope(
        `<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-42</obj>` +
          `<propSet><name>name</name><val xsi:type="xsd:string"> a&lt;&amp;&gt;&#34;&#39; </val></propSet>` +
          `<propSet><name>config.hardware.numCPU</name><val xsi:type="xsd:int">0042</val></propSet>` +
          `<propSet><name>network</name><val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="Network">network-7</ManagedObjectReference></val></propSet>` +
          `<propSet><name>config.hardware.device</name><val xsi:type="ArrayOfVirtualDevice"><VirtualDevice xsi:type="VirtualE1000"><key>4000</key><macAddress>00:50:56:aa:bb:cc</macAddress></VirtualDevice><VirtualDevice xsi:type="VirtualDisk"><key>2000</key></VirtualDevice></val></propSet>` +
          `<propSet><name>runtime.powerState</name><val xsi:type="VirtualMachinePowerState">poweredOn</val></propSet>` +
          `</objects></returnval></RetrievePropertiesExResponse>`,
      ),
    ) as { objects: { obj: MoRef; propSet: { name: string; val: unknown }[] } };
    assert.ok(result.objects.obj instanceof MoRef);
    assert.deepEqual({ ...result.objects.obj }, { type: 'VirtualMachine', value: 'vm-42' });
    const props = Object.fromEntries(asArray(result.objects.propSet).map((p) => [p.name, p.val]));
    assert.equal(props.name, ` a<&>"' `);
    assert.equal(props['config.hardware.numCPU'], '0042');
    assert.deepEqual((props.network as MoRef[]).map((r) => r.toString()), ['Network:network-7']);
    assert.deepEqual(props['config.hardware.device'], [
      { _type: 'VirtualE1000', key: '4000', macAddress: '00:50:56:aa:bb:cc' },
      { _type: 'VirtualDisk', key: '2000' },
    ]);
    assert.equal(props['runtime.powerState'], 'poweredOn');
  });

  it('a method that returns nothing gives undefined; several returnvals give an array', () => {
    assert.equal(parseResponse('Logout', envelope('<LogoutResponse xmlns="urn:vim25"></LogoutResponse>')), undefined);
    const refs = parseResponse('FindAllByUuid', envelope('<FindAllByUuidResponse xmlns="urn:vim25"><returnval type="VirtualMachine">vm-1</returnval><returnval type="VirtualMachine">vm-2</returnval></FindAllByUuidResponse>'));
    assert.deepEqual((refs as MoRef[]).map(String), ['VirtualMachine:vm-1', 'VirtualMachine:vm-2']);
  });

  it('reads a fault by the type of its detail, not by its text', () => {
    const xml = envelope(
      `<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>anything at all</faultstring><detail>` +
        `<InvalidPowerStateFault xmlns="urn:vim25" xsi:type="InvalidPowerState"><requestedState>poweredOn</requestedState><existingState>poweredOn</existingState></InvalidPowerStateFault>` +
        `</detail></soapenv:Fault>`,
    );
    assert.throws(
      () => parseResponse('PowerOnVM_Task', xml),
      (e: unknown) => e instanceof SoapFault && e.faultType === 'InvalidPowerState' && e.detail.existingState === 'poweredOn' && e.message === 'anything at all',
    );
  });

  it('refuses an answer with a DTD (no entity expansion) and one that is no SOAP envelope', () => {
    assert.throws(() => parseResponse('X', '<!DOCTYPE a [<!ENTITY b "cccc">]><a>&b;&b;</a>'), /DTD/);
    assert.throws(() => parseResponse('X', '<html><body>proxy error</body></html>'), /no SOAP envelope/);
  });
});

describe('vsphere:// URIs and passwords', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'vmdr-vsphere-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('reads user, host, port, datacenter and the query; options win over the query', () => {
    const thumb = 'sha256:' + 'ab'.repeat(32);
    const endpoint = parseVsphereUri(`vsphere://administrator%40vsphere.local@vc.example:8443/Europe/DC%201?thumbprint=${thumb}&datastore=ds1&pool=/DC1/host/C1/Resources`, { datastore: 'ds2', passwordFile: '/etc/vmdr/vc.pw' });
    assert.equal(endpoint.user, 'administrator@vsphere.local');
    assert.equal(endpoint.host, 'vc.example');
    assert.equal(endpoint.port, 8443);
    assert.equal(endpoint.datacenter, 'Europe/DC 1');
    assert.equal(endpoint.thumbprint, `SHA256:${Array(32).fill('AB').join(':')}`);
    assert.equal(endpoint.datastore, 'ds2');
    assert.equal(endpoint.pool, '/DC1/host/C1/Resources');
    assert.equal(endpoint.passwordFile, '/etc/vmdr/vc.pw');
    assert.equal(endpoint.passwordEnv, 'VMDR_VSPHERE_PASSWORD');
    assert.equal(parseVsphereUri('vsphere://root@esx1/ha-datacenter').port, 443);
  });

  it('refuses a password in the URI without repeating it, and other malformed URIs with VSPHERE_URI_INVALID', () => {
    for (const uri of ['vsphere://admin:S3cret@vc/DC', 'vsphere://admin:@vc/DC', 'vsphere://admin:S3c/ret@vc/DC']) {
      assert.throws(
        () => parseVsphereUri(uri),
        (e: any) => e.code === 'VSPHERE_URI_INVALID' && /password/.test(e.message) && !/S3c/.test(e.message) && !/S3c/.test(JSON.stringify(e.toJSON())),
        uri,
      );
    }
    for (const uri of ['vsphere://vc/DC', 'vsphere://u@vc', 'vsphere://u@vc/DC?colour=blue', 'vsphere://u@vc/DC?thumbprint=SHA256:12', 'http://u@vc/DC']) {
      assert.throws(() => parseVsphereUri(uri), (e: any) => e.code === 'VSPHERE_URI_INVALID', uri);
    }
  });

  it('reads a password file of mode 0600, refuses one of mode 0644, and says when there is no password at all', async () => {
    const file = join(dir, 'vc.pw');
    await writeFile(file, 'pa ss\n', { mode: 0o600 });
    const endpoint = parseVsphereUri('vsphere://u@vc/DC', { passwordFile: file });
    assert.equal(await readPassword(endpoint), 'pa ss');
    await chmod(file, 0o644);
    const refused = await rejectsWith(readPassword(endpoint), 'VSPHERE_PASSWORD_FILE_OPEN');
    assert.match(refused.message, /mode 0644/);
    assert.ok(!refused.message.includes('pa ss'));
    await rejectsWith(readPassword(parseVsphereUri('vsphere://u@vc/DC', { passwordFile: join(dir, 'missing') })), 'VSPHERE_PASSWORD_FILE_OPEN');
    await rejectsWith(readPassword(parseVsphereUri('vsphere://u@vc/DC', { passwordEnv: 'VMDR_TEST_UNSET_PASSWORD' })), 'VSPHERE_PASSWORD_MISSING');
  });
});
