/**
 * `vmdr config check` on vSphere sites, through the built CLI: the example config is valid, and
 * each mistake an operator makes with a vSphere site (a password in the URI, no user or
 * datacenter, a thumbprint that is no SHA-256 fingerprint, vSphere settings on a libvirt site,
 * what a vSphere target cannot do) is one line naming the file, the place and what was expected,
 * exit 1. A password given by mistake is never repeated.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertOneLineError } from '../helpers/assertions.js';
import { runVmdr } from '../helpers/lab.js';

const EXAMPLE = 'templates/examples/vsphere.yaml';
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const URI = 'uri: vsphere://vmdr@vcenter.example.com/DC1';
const PIN = 'thumbprint: "SHA256:6B:1F:0A:3C:44:90:12:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:9C"';

describe('vmdr config check with a vSphere site', function () {
  this.timeout(120_000);
  let dir: string;
  let example: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-vsphere-config-'));
    example = await readFile(EXAMPLE, 'utf8');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const write = async (name: string, text: string) => {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, text);
    return file;
  };

  it('finds the example valid, and accepts the thumbprint in its other spellings', async () => {
    const spellings = [
      PIN,
      'thumbprint: "6b1f0a3c449012abcdef0123456789abcdef0123456789abcdef01234567899c"',
      'thumbprint: "sha256:6B1F0A3C449012ABCDEF0123456789ABCDEF0123456789ABCDEF01234567899C"',
    ];
    const results = await Promise.all(spellings.map(async (pin, i) => runVmdr(['config', 'check', await write(`valid-${i}`, example.replace(PIN, pin))])));
    results.forEach((result, i) => {
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /: valid: 2 sites, 0 tenants, 1 protections, 1 plans, 0 drills\n$/, spellings[i]);
    });
    // The pin may be in the URI's query instead (the settings win when both say).
    const inQuery = example.replace(URI, `${URI}?thumbprint=SHA256:${'AB:'.repeat(31)}CD&datastore=ds2`);
    assert.equal((await runVmdr(['config', 'check', await write('query', inQuery)])).code, 0);
    // A tenant's DR networks are port groups there, spaces and all.
    const tenant = example.replace('protections:\n  - name: shop-db\n', 'tenants:\n  - { name: shop, networks: ["DR Network"] }\nprotections:\n  - name: shop-db\n    tenant: shop\n');
    const withTenant = await runVmdr(['config', 'check', await write('tenant', tenant)]);
    assert.equal(withTenant.code, 0, withTenant.stderr);
    assert.match(withTenant.stdout, /valid: 2 sites, 1 tenants, 1 protections/);
  });

  const cases: { name: string; text: (example: string) => string; error: string }[] = [
    {
      name: 'a password in the URI',
      text: (e) => e.replace(URI, 'uri: vsphere://vmdr:S3cret-pw@vcenter.example.com/DC1'),
      error:
        ':\\d+:\\d+: sites\\[1\\]\\.uri: a password never goes in the URI: put it in a file named by vsphere\\.passwordFile \\(mode 0600\\) or in the environment variable VMDR_VSPHERE_PASSWORD \\(vsphere\\.passwordEnv names another\\)',
    },
    { name: 'no user', text: (e) => e.replace(URI, 'uri: vsphere://vcenter.example.com/DC1'), error: ':\\d+:\\d+: sites\\[1\\]\\.uri: name the user vmdr logs in as: vsphere://user@host/Datacenter' },
    { name: 'no datacenter', text: (e) => e.replace(URI, 'uri: vsphere://vmdr@vcenter.example.com/'), error: ':\\d+:\\d+: sites\\[1\\]\\.uri: name the datacenter after the host: vsphere://user@host/Datacenter' },
    {
      name: 'a thumbprint too short',
      text: (e) => e.replace(PIN, 'thumbprint: "SHA256:6B:1F:0A"'),
      error: ':\\d+:\\d+: sites\\[1\\]\\.vsphere\\.thumbprint: a SHA-256 certificate fingerprint: 32 bytes in hex, colons optional, such as SHA256:6B:1F:…:9C \\(openssl x509 -noout -fingerprint -sha256\\)',
    },
    {
      name: 'a SHA-1 thumbprint in the query',
      text: (e) => e.replace(URI, `${URI}?thumbprint=${'AB:'.repeat(19)}CD`),
      error: ':\\d+:\\d+: sites\\[1\\]\\.uri: thumbprint: expected a SHA-256 certificate fingerprint: 32 bytes in hex, colons optional, .*',
    },
    { name: 'an unknown query parameter', text: (e) => e.replace(URI, `${URI}?insecure=1`), error: ':\\d+:\\d+: sites\\[1\\]\\.uri: unknown query parameter "insecure": expected thumbprint, datastore, pool, folder' },
    { name: 'a relative passwordFile', text: (e) => e.replace('passwordFile: /etc/vmdr/vsphere-password', 'passwordFile: vsphere-password'), error: ':\\d+:\\d+: sites\\[1\\]\\.vsphere\\.passwordFile: an absolute path' },
    {
      name: 'a password in the settings',
      text: (e) => e.replace('passwordFile: /etc/vmdr/vsphere-password', 'password: S3cret-pw'),
      error: ':\\d+:\\d+: sites\\[1\\]\\.vsphere: unknown key "password"',
    },
    {
      name: 'passwordFile and passwordEnv',
      text: (e) => e.replace('passwordFile: /etc/vmdr/vsphere-password', 'passwordFile: /etc/vmdr/vsphere-password\n      passwordEnv: DR_PASSWORD'),
      error: ':\\d+:\\d+: sites\\[1\\]\\.vsphere\\.passwordEnv: give passwordFile or passwordEnv, not both: the password is read from one place',
    },
    {
      name: 'vSphere settings on a libvirt site',
      text: (e) => e.replace('    uri: qemu:///system\n', '    uri: qemu:///system\n    vsphere: { datastore: ds1 }\n'),
      error: ':\\d+:\\d+: sites\\[0\\]\\.vsphere: vSphere settings on a site that is not vSphere: site "prod" is libvirt \\(its uri is not vsphere://…\\)',
    },
    {
      name: 'kernel boot on a vSphere target',
      text: (e) => e.replace('boot: { kind: disk }', 'boot: { kind: kernel, kernel: /boot/vmlinuz, initrd: /boot/initrd.img }'),
      error: ':\\d+:\\d+: protections\\[0\\]\\.target\\.boot\\.kind: a vSphere target boots from its disk \\(boot: \\{ kind: disk \\}\\): site "dr-vsphere" is vSphere, and direct kernel boot is libvirt\'s',
    },
    {
      name: 'a serial health check on a vSphere target',
      text: (e) => e.replace('health: { agent: true,', 'health: { serial: "^ready", agent: true,'),
      error:
        ':\\d+:\\d+: protections\\[0\\]\\.health\\.serial: a vSphere target\'s serial console is not a file vmdr can read: site "dr-vsphere" is vSphere; check with agent: true \\(VMware Tools running\\), tcp or http instead',
    },
    {
      name: 'a libvirt template on a vSphere target',
      text: (e) => e.replace('vm: shop-db-dr', 'vm: shop-db-dr\n      template: libvirt-domain.xml'),
      error: ':\\d+:\\d+: protections\\[0\\]\\.target\\.template: a domain template is libvirt XML: site "dr-vsphere" is vSphere, whose targets are made from the protection\'s settings',
    },
    {
      name: 'a port group name on a libvirt target',
      text: (e) => e.replace('site: dr-vsphere\n      vm: shop-db-dr', 'site: prod\n      vm: shop-db-dr'),
      error: ':\\d+:\\d+: protections\\[0\\]\\.target\\.nics\\[0\\]\\.network: a name of letters, digits, "\\.", "-" or "_" \\(at most 63\\): a libvirt network',
    },
  ];

  it('answers each mistake with one line naming the file, the place and what was expected, exit 1', async () => {
    const files = await Promise.all(cases.map((c, i) => write(`case-${i}`, c.text(example))));
    const results = await Promise.all(files.map((file) => runVmdr(['config', 'check', file])));
    results.forEach((result, i) => {
      assert.equal(result.stdout, '', cases[i]!.name);
      assertOneLineError(result, new RegExp(`^vmdr: ${escape(files[i]!)}(?:${cases[i]!.error})$`));
      assert.doesNotMatch(result.stderr, /S3cret-pw/, `${cases[i]!.name}: the password is repeated`);
    });
  });
});
