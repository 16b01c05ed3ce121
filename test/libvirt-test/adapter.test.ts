/**
 * The libvirt adapter against libvirt's test driver (test:///default): a real libvirt, in this
 * process, no daemon. Its state is shared by every connection of this process, so each VM gets a
 * unique `test-…` name and the after hook removes whatever a test left behind.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KNOWN_SCHEMES, openAdapter } from '../../hypervisors/index.js';
import { loadAdapter } from '../../hypervisors/load.js';
import { bridgeNameFor } from '../../hypervisors/libvirt/networks.js';
import { renderDomainXml } from '../../hypervisors/libvirt/domain-xml.js';
import { VmdrError, type HypervisorAdapter, type VmSpec } from '../../hypervisors/types.js';
import { rejectsWith } from '../helpers/assertions.js';

const URI = 'test:///default';


describe('libvirt adapter on the test driver', () => {
  let adapter: HypervisorAdapter;
  let dir: string;
  const made = new Set<string>();

  const uniqueName = (what: string) => `test-${what}-${randomBytes(3).toString('hex')}`;

  function spec(overrides: Partial<VmSpec> = {}): VmSpec {
    const name = overrides.name ?? uniqueName('vm');
    made.add(name);
    return {
      name,
      memoryMiB: 128,
      vcpus: 2,
      boot: { kind: 'kernel', kernel: '/var/lib/vmdr/lab/vmlinuz', initrd: '/var/lib/vmdr/lab/initrd.img', cmdline: 'console=ttyS0 quiet' },
      disks: [{ path: join(dir, 'vda.qcow2'), format: 'qcow2' }],
      nics: [{ network: 'default', mac: '52:54:00:00:00:01' }],
      serialLog: join(dir, 'console.log'),
      labels: { role: 'target', protection: 'acme-db' },
      ...overrides,
    };
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-libvirt-test-'));
    adapter = openAdapter(URI);
    await adapter.connect();
  });

  after(async () => {
    const problems: string[] = [];
    for (const name of made) {
      try {
        await adapter.stop(name, { mode: 'force' });
        await adapter.undefine(name);
      } catch (err) {
        if (!(err instanceof VmdrError && err.code === 'VM_NOT_FOUND')) problems.push(`${name}: ${(err as Error).message}`);
      }
    }
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'clean-up failed');
  });

  it('defines a VM from a VmSpec: powered off, with the disks, NICs and labels asked for', async () => {
    const s = spec();
    const vm = await adapter.defineVm(s);
    assert.equal(vm.name, s.name);
    assert.match(vm.id, /^[0-9a-f-]{36}$/);
    assert.equal(vm.powerState, 'shutoff');
    assert.equal(vm.memoryMiB, 128);
    assert.equal(vm.vcpus, 2);
    assert.deepEqual(vm.disks, [{ target: 'vda', device: 'disk', path: join(dir, 'vda.qcow2'), format: 'qcow2', bus: 'virtio' }]);
    assert.deepEqual(vm.nics, [{ mac: '52:54:00:00:00:01', network: 'default', model: 'virtio' }]);
    assert.deepEqual(vm.labels, { role: 'target', protection: 'acme-db' });
    assert.equal(await adapter.serialLogPath(s.name), join(dir, 'console.log'));
  });

  it('lists it and finds it by name and by UUID', async () => {
    const s = spec();
    const defined = await adapter.defineVm(s);
    const listed = (await adapter.listVms()).find((v) => v.name === s.name);
    assert.deepEqual(listed, defined);
    assert.deepEqual(await adapter.getVm(s.name), defined);
    assert.deepEqual(await adapter.getVm(defined.id), defined);
    assert.deepEqual(await adapter.getVm(defined.id.toUpperCase()), defined);
  });

  it('lists only the VMs asked for: by name (a name no VM has is left out), the running ones, or both', async () => {
    const [off, on] = [spec(), spec()];
    await adapter.defineVm(off);
    await adapter.defineVm(on);
    await adapter.start(on.name);
    const names = (vms: { name: string }[]) => vms.map((v) => v.name).sort();
    const named = await adapter.listVms({ names: [off.name, on.name, 'test-no-such-vm', off.name] });
    assert.deepEqual(names(named), [off.name, on.name].sort());
    assert.deepEqual(named.find((v) => v.name === off.name), await adapter.getVm(off.name));
    assert.equal(named.find((v) => v.name === on.name)?.powerState, 'running');
    // The driver's own VM `test` runs from the start.
    const running = await adapter.listVms({ running: true });
    assert.ok(running.every((v) => v.powerState === 'running'), JSON.stringify(running.map((v) => [v.name, v.powerState])));
    assert.deepEqual(names(running).filter((n) => n === 'test' || n === on.name || n === off.name), ['test', on.name].sort());
    assert.deepEqual(names(await adapter.listVms({ names: [off.name, on.name], running: true })), [on.name]);
    assert.deepEqual(await adapter.listVms({ names: [] }), []);
    assert.deepEqual(await adapter.listVms({ names: ['test-no-such-vm'] }), []);
    // The same VM as the whole list has it.
    assert.deepEqual((await adapter.listVms()).find((v) => v.name === on.name), named.find((v) => v.name === on.name));
  });

  it('refuses to define a VM whose name is taken, leaving the first one as it was', async () => {
    const s = spec();
    const first = await adapter.defineVm(s);
    const err = await rejectsWith(adapter.defineVm({ ...s, memoryMiB: 512 }), 'VM_ALREADY_EXISTS');
    assert.deepEqual(err.subject, { vm: s.name, host: URI });
    assert.deepEqual(await adapter.getVm(s.name), first);
  });

  it('refuses to define a VM on a network that does not exist', async () => {
    const s = spec({ nics: [{ network: 'test-no-such-network' }] });
    const err = await rejectsWith(adapter.defineVm(s), 'NETWORK_NOT_FOUND');
    assert.equal(err.subject.network, 'test-no-such-network');
    await rejectsWith(adapter.getVm(s.name), 'VM_NOT_FOUND');
  });

  it('starts and stops a VM, by force and gracefully; stopping a stopped VM does nothing', async () => {
    const s = spec();
    await adapter.defineVm(s);
    await adapter.start(s.name);
    assert.equal((await adapter.getVm(s.name)).powerState, 'running');
    const twice = await rejectsWith(adapter.start(s.name), 'INVALID_POWER_STATE');
    assert.equal(twice.subject.vm, s.name);

    await adapter.stop(s.name, { mode: 'force' });
    assert.equal((await adapter.getVm(s.name)).powerState, 'shutoff');
    await adapter.stop(s.name, { mode: 'force' });
    await adapter.stop(s.name, { mode: 'graceful', timeoutMs: 1000 });

    await adapter.start(s.name);
    await adapter.stop(s.name, { mode: 'graceful', timeoutMs: 5000 });
    assert.equal((await adapter.getVm(s.name)).powerState, 'shutoff');
  });

  it('changes a NIC’s MAC and network while the VM is off, and refuses while it runs', async () => {
    const s = spec({ nics: [{ network: 'default', mac: '52:54:00:00:00:01' }, { network: 'default', mac: '52:54:00:00:00:02' }] });
    await adapter.defineVm(s);
    const changed = await adapter.setNicIdentity(s.name, '52:54:00:00:00:02', { mac: '52:54:00:D7:00:09', network: 'default' });
    assert.deepEqual(
      changed.nics.map((n) => [n.mac, n.network]),
      [
        ['52:54:00:00:00:01', 'default'],
        ['52:54:00:d7:00:09', 'default'],
      ],
    );
    assert.deepEqual((await adapter.getVm(s.name)).nics, changed.nics);

    await adapter.start(s.name);
    const running = await rejectsWith(adapter.setNicIdentity(s.name, '52:54:00:00:00:01', { mac: '52:54:00:00:00:03' }), 'INVALID_POWER_STATE');
    assert.equal(running.subject.state, 'running');
    await adapter.stop(s.name, { mode: 'force' });
    assert.equal((await adapter.getVm(s.name)).nics[0]?.mac, '52:54:00:00:00:01');
  });

  it('says which NIC identity it cannot apply, and why', async () => {
    const s = spec({ nics: [{ network: 'default', mac: '52:54:00:00:00:01' }, { network: 'default', mac: '52:54:00:00:00:02' }] });
    await adapter.defineVm(s);
    await rejectsWith(adapter.setNicIdentity(s.name, '52:54:00:00:00:01', { network: 'test-no-such-network' }), 'NETWORK_NOT_FOUND');
    await rejectsWith(adapter.setNicIdentity(s.name, '52:54:00:00:00:99', { mac: '52:54:00:00:00:03' }), 'NIC_NOT_FOUND');
    await rejectsWith(adapter.setNicIdentity(s.name, '52:54:00:00:00:01', { mac: '52:54:00:00:00:02' }), 'INVALID_NIC_IDENTITY');
    await rejectsWith(adapter.setNicIdentity(s.name, '52:54:00:00:00:01', { mac: 'not-a-mac' }), 'INVALID_NIC_IDENTITY');
    await rejectsWith(adapter.setNicIdentity(s.name, '52:54:00:00:00:01', { mac: '01:00:5e:00:00:01' }), 'INVALID_NIC_IDENTITY');
    assert.deepEqual(
      (await adapter.getVm(s.name)).nics.map((n) => n.mac),
      ['52:54:00:00:00:01', '52:54:00:00:00:02'],
    );
  });

  it('refuses to guess between two NICs that share a MAC', async () => {
    const s = spec({ nics: [{ network: 'default', mac: '52:54:00:00:00:05' }, { network: 'default', mac: '52:54:00:00:00:05' }] });
    await adapter.defineVm(s);
    const err = await rejectsWith(adapter.setNicIdentity(s.name, '52:54:00:00:00:05', { mac: '52:54:00:00:00:06' }), 'INVALID_NIC_IDENTITY');
    assert.match(err.message, /2 NICs have this MAC/);
  });

  it('adds a disk to a VM that is off, beside an identity seed, and refuses a target already taken', async () => {
    const s = spec();
    await adapter.defineVm(s);
    const { seed } = await adapter.applyGuestIdentity(s.name, { instanceId: 'vmdr-test-seed', hostname: 'test-seeded', nics: [] });
    assert.equal(seed, join(dir, 'seed-vmdr-test-seed.iso'));
    const vm = await adapter.addDisk(s.name, { path: join(dir, 'vdc.qcow2'), format: 'qcow2', target: 'vdc' });
    assert.deepEqual(
      vm.disks.map((d) => [d.target, d.path, d.identitySeed ?? false]),
      [
        ['vda', join(dir, 'vda.qcow2'), false],
        ['vdb', seed, true],
        ['vdc', join(dir, 'vdc.qcow2'), false],
      ],
    );
    const taken = await rejectsWith(adapter.addDisk(s.name, { path: join(dir, 'other.qcow2'), format: 'qcow2', target: 'vdc' }), 'HYPERVISOR_OPERATION_FAILED');
    assert.match(taken.message, /already has a disk vdc/);
    await adapter.start(s.name);
    await rejectsWith(adapter.addDisk(s.name, { path: join(dir, 'vdd.qcow2'), format: 'qcow2', target: 'vdd' }), 'INVALID_POWER_STATE');
    await adapter.stop(s.name, { mode: 'force' });
    assert.deepEqual((await adapter.getVm(s.name)).disks.map((d) => d.target), ['vda', 'vdb', 'vdc']);
  });

  it('keeps labels with any characters through a round trip', async () => {
    const labels = { protection: 'a<b&"c\'d>', tenant: 'ünïcødé', 'key with spaces': '', '{{not-a-placeholder}}': 'x' };
    const s = spec({ labels });
    await adapter.defineVm(s);
    assert.deepEqual((await adapter.getVm(s.name)).labels, labels);
  });

  it('escapes a hostile VM name instead of pasting it into the XML', async () => {
    const name = `test-a<b&"c'-${randomBytes(3).toString('hex')}`;
    const s = spec({ name });
    const xml = await renderDomainXml(s);
    assert.ok(xml.includes(`<name>test-a&lt;b&amp;&quot;c&apos;-`), xml);
    assert.ok(!xml.includes('a<b'), xml);

    const vm = await adapter.defineVm(s);
    assert.equal(vm.name, name);
    assert.equal((await adapter.getVm(vm.id)).name, name);
    assert.ok((await adapter.listVms()).some((v) => v.name === name));
    await adapter.undefine(name);
    await rejectsWith(adapter.getVm(name), 'VM_NOT_FOUND');
  });

  it('names the template file and the value when a template asks for one nobody supplied', async () => {
    const template = join(dir, 'needs-owner.xml');
    await writeFile(template, `<domain type='qemu'><name>{{name}}</name><description>owned by {{owner}}</description><memory unit='MiB'>{{memoryMiB}}</memory><vcpu>{{vcpus}}</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`);
    const s = spec({ template });
    const err = await rejectsWith(adapter.defineVm(s), 'TEMPLATE_VALUE_MISSING');
    assert.deepEqual(err.subject, { file: template, value: 'owner' });
    await rejectsWith(adapter.getVm(s.name), 'VM_NOT_FOUND');
  });

  it('fills a custom template and adds the spec’s devices to it', async () => {
    const template = join(dir, 'custom.xml');
    await writeFile(template, `<domain type='qemu'><name>{{name}}</name><description>kernel {{kernel}}</description><memory unit='GiB'>1</memory><vcpu>{{vcpus}}</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`);
    const s = spec({ template });
    const vm = await adapter.defineVm(s);
    assert.equal(vm.memoryMiB, 1024);
    assert.deepEqual(vm.disks.map((d) => d.target), ['vda']);
    assert.equal(await adapter.serialLogPath(s.name), s.serialLog);
  });

  it('says which template does not exist or does not parse', async () => {
    const missing = await rejectsWith(adapter.defineVm(spec({ template: 'no-such-template.xml' })), 'TEMPLATE_INVALID');
    assert.match(missing.subject.file ?? '', /templates\/domains\/no-such-template\.xml$/);
    const broken = join(dir, 'broken.xml');
    await writeFile(broken, '<domain><name>{{name}}</domain>');
    const err = await rejectsWith(adapter.defineVm(spec({ template: broken })), 'TEMPLATE_INVALID');
    assert.match(err.message, /line 1/);
  });

  it('gives a VM the guest agent channel once when asked, even over a template that has it', async () => {
    const channel = /<channel type="unix">\s*<target type="virtio" name="org\.qemu\.guest_agent\.0"\/>\s*<\/channel>/g;
    assert.equal((await renderDomainXml(spec())).match(channel), null);
    assert.equal((await renderDomainXml(spec({ guestAgent: true }))).match(channel)?.length, 1);
    const template = join(dir, 'with-channel.xml');
    await writeFile(template, `<domain type='qemu'><name>{{name}}</name><memory unit='MiB'>{{memoryMiB}}</memory><vcpu>{{vcpus}}</vcpu><os><type arch='x86_64'>hvm</type></os><devices><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices></domain>`);
    assert.equal((await renderDomainXml(spec({ template, guestAgent: true }))).match(/org\.qemu\.guest_agent\.0/g)?.length, 1);
  });

  it('a freeze on a hypervisor that cannot freeze says so, asks no thaw, and never throws', async () => {
    const s = spec();
    await adapter.defineVm(s);
    await adapter.start(s.name);
    const freeze = await adapter.changeTracker!.freezeGuests([s.name, 'test-no-such-vm'], { timeoutMs: 1_000 });
    assert.deepEqual(freeze.frozen, []);
    const thawed = await freeze.thaw();
    assert.deepEqual([thawed.get(s.name)!.consistency, thawed.get(s.name)!.issue!.code], ['crash', 'unsupported']);
    assert.equal(thawed.get('test-no-such-vm')!.consistency, 'crash');
    assert.equal(await freeze.thaw(), thawed, 'a second thaw gives the first one\'s answer');
    await adapter.stop(s.name, { mode: 'force' });
  });

  it('pauses running VMs together and resumes only those it paused: a shut-off or missing VM is refused, saying why', async () => {
    const [on, off] = [spec(), spec()];
    await adapter.defineVm(on);
    await adapter.defineVm(off);
    await adapter.start(on.name);
    try {
      const pause = await adapter.changeTracker!.pauseVms([on.name, off.name, 'test-no-such-vm'], { timeoutMs: 1_000 });
      assert.deepEqual(pause.paused, [on.name]);
      assert.equal(await adapter.powerState(on.name), 'paused');
      assert.match(pause.refused.get(off.name)!, /is shutoff/);
      assert.ok(pause.refused.has('test-no-such-vm'));
      const resumed = await pause.resume();
      assert.deepEqual([...resumed.keys()], [on.name]);
      assert.equal(resumed.get(on.name)!.error, undefined);
      assert.equal(await adapter.powerState(on.name), 'running');
      assert.equal(await pause.resume(), resumed, 'a second resume gives the first one\'s answer');
    } finally {
      await adapter.stop(on.name, { mode: 'force' }).catch(() => undefined);
      for (const s of [on, off]) await adapter.undefine(s.name).catch(() => undefined);
    }
  });

  it('reports a missing VM as VmNotFound, naming it and the host', async () => {
    for (const attempt of [
      () => adapter.getVm('test-no-such-vm'),
      () => adapter.getVm('00000000-0000-0000-0000-000000000000'),
      () => adapter.start('test-no-such-vm'),
      () => adapter.stop('test-no-such-vm', { mode: 'force' }),
      () => adapter.undefine('test-no-such-vm'),
      () => adapter.setNicIdentity('test-no-such-vm', '52:54:00:00:00:01', { mac: '52:54:00:00:00:02' }),
    ]) {
      const err = await rejectsWith(attempt(), 'VM_NOT_FOUND');
      assert.equal(err.subject.host, URI);
      assert.match(err.subject.vm ?? '', /^(test-no-such-vm|0{8}-.*)$/);
    }
  });

  it('refuses to undefine a running VM', async () => {
    const s = spec();
    await adapter.defineVm(s);
    await adapter.start(s.name);
    await rejectsWith(adapter.undefine(s.name), 'INVALID_POWER_STATE');
    await adapter.stop(s.name, { mode: 'force' });
    await adapter.undefine(s.name);
    await rejectsWith(adapter.getVm(s.name), 'VM_NOT_FOUND');
  });

  it('lists the driver’s networks and says the default one is not isolated', async () => {
    const networks = await adapter.listNetworks();
    const def = networks.find((n) => n.name === 'default');
    assert.ok(def, JSON.stringify(networks));
    assert.equal(def.isolated, false);
    assert.equal(def.labels, undefined);
  });

  it('defines an isolated network, marked as vmdr’s and started, and removes it', async () => {
    const name = `test-bubble-${randomBytes(3).toString('hex')}`;
    const made = await adapter.ensureIsolatedNetwork({ name, labels: { drill: 'd1' } });
    assert.deepEqual([made.name, made.active, made.isolated, made.labels], [name, true, true, { drill: 'd1' }]);
    await adapter.removeNetwork(name);
    await rejectsWith(adapter.removeNetwork(name), 'NETWORK_NOT_FOUND');
  });
});

describe('hypervisor registry', () => {
  it('serves libvirt URIs with the libvirt adapter', () => {
    for (const uri of ['qemu:///system', 'qemu+ssh://dr1.example/system', 'qemu+tcp://127.0.0.1/system', 'test:///default']) {
      const adapter = openAdapter(uri);
      assert.equal(adapter.kind, 'libvirt');
      assert.equal(adapter.uri, uri);
    }
  });

  it('names the URI and the schemes it knows when it knows none', async () => {
    const err = await rejectsWith(Promise.resolve().then(() => openAdapter('foo://x')), 'UNKNOWN_HYPERVISOR_URI');
    assert.match(err.message, /"foo:\/\/x"/);
    assert.match(err.message, /qemu:\/\/, .*test:\/\//);
    assert.ok(KNOWN_SCHEMES.includes('qemu+ssh'));
    await rejectsWith(Promise.resolve().then(() => openAdapter('not a uri')), 'UNKNOWN_HYPERVISOR_URI');
  });

  it('opens the vSphere adapter for vsphere:// URIs, and refuses one with a password in it', async () => {
    assert.equal(openAdapter('vsphere://admin@vcenter/DC1').kind, 'vsphere');
    await rejectsWith(Promise.resolve().then(() => openAdapter('vsphere://admin:secret@vcenter/DC1')), 'VSPHERE_URI_INVALID');
  });

  it('loads, for what the site connections open, the adapter openAdapter gives, and refuses the URIs it refuses', async () => {
    for (const uri of ['qemu:///system', 'qemu+ssh://dr1.example/system', 'test:///default', 'vsphere://admin@vcenter/DC1']) {
      const adapter = await loadAdapter(uri, { callTimeoutMs: 5_000 });
      assert.equal(adapter.kind, openAdapter(uri).kind);
      assert.equal(adapter.uri, uri);
    }
    const err = await rejectsWith(loadAdapter('foo://x'), 'UNKNOWN_HYPERVISOR_URI');
    assert.match(err.message, /"foo:\/\/x"/);
    await rejectsWith(loadAdapter('vsphere://admin:secret@vcenter/DC1'), 'VSPHERE_URI_INVALID');
  });

  it('reports a libvirt it cannot reach as HypervisorUnreachable, with a remedy', async () => {
    const uri = 'qemu+unix:///system?socket=/nonexistent/libvirt-sock';
    const adapter = openAdapter(uri);
    const err = await rejectsWith(adapter.connect(), 'HYPERVISOR_UNREACHABLE');
    assert.equal(err.subject.host, uri);
    assert.ok(err.remedy);
    // Calls other than connect() connect on demand and fail the same way.
    await rejectsWith(adapter.listVms(), 'HYPERVISOR_UNREACHABLE');
  });
});

describe('bridge names for isolated networks', () => {
  it('fit in 15 characters and differ for long names with a common start', () => {
    assert.equal(bridgeNameFor('vmdr-lab-dr'), 'vmdr-lab-dr');
    const a = bridgeNameFor('vmdr-drill-acme-monthly-1');
    const b = bridgeNameFor('vmdr-drill-acme-monthly-2');
    assert.ok(a.length <= 15 && b.length <= 15, `${a} ${b}`);
    assert.notEqual(a, b);
    assert.match(bridgeNameFor('a b/c'), /^[A-Za-z0-9_-]{1,15}$/);
  });
});
