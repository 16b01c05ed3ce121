/**
 * The libvirt adapter against the real libvirtd and QEMU (qemu:///system) with the lab guest: what
 * the adapter says about a VM is checked against what the guest itself prints on its serial
 * console. The guest sits on isolated networks this suite makes, and sends no traffic.
 * Everything the suite makes is named test-… and removed in the after hook, even after a failure.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import { VmdrError, type HypervisorAdapter, type NetworkInfo } from '../../hypervisors/types.js';
import { ensureLabGuest, fileSize, GUEST_READY, LAB_CMDLINE, labPaths, labScratchDir, makeDisk, parseGuestFields, waitForSerialLine } from '../helpers/lab.js';
import { rejectsWith } from '../helpers/assertions.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';


const randomMac = () => `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;

describe('libvirt adapter on qemu:///system with the lab guest', function () {
  this.timeout(180_000);

  const suffix = randomBytes(3).toString('hex');
  const vm = `test-vmdr-adapter-${suffix}`;
  const marker = `test-marker-${suffix}`;
  // Long enough that their bridge names must be derived, not copied.
  const netA = `test-vmdr-bubble-a-${suffix}`;
  const netB = `test-vmdr-bubble-b-${suffix}`;
  const mac1 = randomMac();
  const mac2 = randomMac();
  let adapter: HypervisorAdapter;
  let dir: string;
  let disk: string;
  let serialLog: string;

  /** Boots the VM and returns the fields of the guest's first ready line of this boot. */
  async function bootAndRead(): Promise<Record<string, string>> {
    const from = await fileSize(serialLog);
    await adapter.start(vm);
    const match = await waitForSerialLine({ vm, file: serialLog, pattern: GUEST_READY, timeoutMs: 90_000, fromOffset: from });
    return parseGuestFields(match[1]!);
  }

  before(async () => {
    await ensureLabGuest();
    dir = await labScratchDir('libvirt-adapter');
    disk = join(dir, 'vda.qcow2');
    serialLog = join(dir, 'console.log');
    await makeDisk(disk, marker);
    adapter = openAdapter(URI);
    await adapter.connect();
  });

  after(async () => {
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>, gone: string) => {
      try {
        await fn();
      } catch (err) {
        if (!(err instanceof VmdrError && err.code === gone)) problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    if (adapter) {
      await attempt(`stop ${vm}`, () => adapter.stop(vm, { mode: 'force' }), 'VM_NOT_FOUND');
      await attempt(`undefine ${vm}`, () => adapter.undefine(vm), 'VM_NOT_FOUND');
      for (const net of [netA, netB]) await attempt(`remove network ${net}`, () => adapter.removeNetwork(net), 'NETWORK_NOT_FOUND');
      await adapter.close();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'clean-up failed');
  });

  it('makes isolated networks, idempotently: no forwarding, no host address on the bridge', async () => {
    const a = await adapter.ensureIsolatedNetwork({ name: netA, labels: { role: 'test' } });
    assert.deepEqual(await adapter.ensureIsolatedNetwork({ name: netA, labels: { role: 'test' } }), a);
    const b = await adapter.ensureIsolatedNetwork({ name: netB });
    for (const net of [a, b]) {
      assert.equal(net.active, true);
      assert.equal(net.isolated, true);
      assert.ok(net.bridge && net.bridge.length <= 15, `bridge ${net.bridge}`);
      // The host has no IPv4 or IPv6 address on the bridge: nothing can be routed in or out.
      const { stdout } = await exec('ip', ['-o', 'addr', 'show', 'dev', net.bridge, 'scope', 'global']);
      assert.equal(stdout.trim(), '', `addresses on ${net.bridge}: ${stdout}`);
    }
    assert.notEqual(a.bridge, b.bridge);
    const listed = (await adapter.listNetworks()).find((n) => n.name === netA);
    assert.deepEqual(listed, { ...a, labels: { role: 'test' } });
  });

  it('refuses to remove a network vmdr did not make', async () => {
    const err = await rejectsWith(adapter.removeNetwork('default'), 'NOT_MANAGED_BY_VMDR');
    assert.equal(err.subject.network, 'default');
    assert.ok((await adapter.listNetworks()).some((n) => n.name === 'default'));
  });

  it('defines a VM from the template and boots it: the guest reports the MAC and disk it was given', async () => {
    const { kernel, initrd } = labPaths();
    const defined = await adapter.defineVm({
      name: vm,
      memoryMiB: 256,
      vcpus: 1,
      boot: { kind: 'kernel', kernel, initrd, cmdline: LAB_CMDLINE },
      disks: [{ path: disk, format: 'qcow2' }],
      nics: [{ network: netA, mac: mac1 }],
      serialLog,
      labels: { role: 'test', suite: 'libvirt-adapter' },
    });
    assert.equal(defined.powerState, 'shutoff');
    assert.deepEqual(defined.nics, [{ mac: mac1, network: netA, model: 'virtio' }]);
    const withSizes = await adapter.getVm(defined.id);
    assert.equal(withSizes.disks[0]?.capacityBytes, 64 * 2 ** 20);
    assert.equal(await adapter.serialLogPath(vm), serialLog);

    const guest = await bootAndRead();
    assert.equal(guest.mac, mac1);
    assert.equal(guest.marker, marker);
    assert.equal(guest.seed, 'no');
    const running = await adapter.getVm(vm);
    assert.equal(running.powerState, 'running');
    assert.equal(running.nics[0]?.bridge, (await network(netA)).bridge);
  });

  it('will not change a running VM’s identity', async () => {
    const err = await rejectsWith(adapter.setNicIdentity(vm, mac1, { mac: mac2 }), 'INVALID_POWER_STATE');
    assert.deepEqual(err.subject, { vm, host: URI, state: 'running' });
    await rejectsWith(adapter.applyGuestIdentity(vm, { instanceId: `test-instance-${suffix}`, hostname: 'test-running', nics: [] }), 'INVALID_POWER_STATE');
  });

  it('stops gracefully within a deadline, or says it could not; gives up on abort; forces when asked', async () => {
    // The lab guest has no ACPI daemon: it ignores the power button, as a hung guest would.
    const timedOut = await rejectsWith(adapter.stop(vm, { mode: 'graceful', timeoutMs: 1500 }), 'STOP_TIMED_OUT');
    assert.equal(timedOut.subject.vm, vm);
    assert.equal((await adapter.getVm(vm)).powerState, 'running');

    const started = Date.now();
    await assert.rejects(adapter.stop(vm, { mode: 'graceful', timeoutMs: 60_000, signal: AbortSignal.timeout(300) }), { name: 'TimeoutError' });
    assert.ok(Date.now() - started < 10_000, 'the abort ended the wait');
    assert.equal((await adapter.getVm(vm)).powerState, 'running');

    await adapter.stop(vm, { mode: 'graceful', timeoutMs: 1500, forceOnTimeout: true });
    assert.equal((await adapter.getVm(vm)).powerState, 'shutoff');
    await adapter.stop(vm, { mode: 'force' });
    await adapter.stop(vm, { mode: 'graceful', timeoutMs: 1000 });
  });

  it('moves the NIC to a new MAC and network while off; the next boot shows them', async () => {
    const changed = await adapter.setNicIdentity(vm, mac1.toUpperCase(), { mac: mac2, network: netB });
    assert.deepEqual(changed.nics, [{ mac: mac2, network: netB, model: 'virtio' }]);

    const guest = await bootAndRead();
    assert.equal(guest.mac, mac2);
    assert.equal(guest.marker, marker);
    assert.equal((await adapter.getVm(vm)).nics[0]?.bridge, (await network(netB)).bridge);
    await adapter.stop(vm, { mode: 'force' });
  });

  it('gives the guest the identity it reads at boot (MAC, network, hostname, address), and takes it away', async () => {
    const applied = await adapter.applyGuestIdentity(vm, {
      instanceId: `test-instance-${suffix}`,
      hostname: `test-seeded-${suffix}`,
      nics: [{ mac: mac1, network: netA, addresses: ['192.0.2.41/24'], gateway: '192.0.2.1', dns: ['192.0.2.53'] }],
    });
    assert.deepEqual(applied.nics, [{ mac: mac1, network: netA }]);
    assert.equal(applied.seed, join(dir, `seed-test-instance-${suffix}.iso`));
    const seeded = await adapter.getVm(vm);
    assert.deepEqual(seeded.disks.at(-1), { target: 'vdb', device: 'disk', path: applied.seed, format: 'raw', bus: 'virtio', identitySeed: true, capacityBytes: seeded.disks.at(-1)?.capacityBytes });
    const guest = await bootAndRead();
    assert.equal(guest.seed, 'yes');
    assert.equal(guest.hostname, `test-seeded-${suffix}`);
    assert.equal(guest.instance, `test-instance-${suffix}`);
    assert.equal(guest.mac, mac1);
    assert.equal(guest['mac-match'], 'yes');
    assert.equal(guest.ip, '192.0.2.41/24');
    assert.equal(guest.gw, '192.0.2.1');
    assert.equal(guest.dns, '192.0.2.53');
    assert.equal((await adapter.getVm(vm)).nics[0]?.bridge, (await network(netA)).bridge);
    await adapter.stop(vm, { mode: 'force' });

    await adapter.removeGuestIdentity(vm);
    assert.deepEqual((await adapter.getVm(vm)).disks.map((d) => d.path), [disk]);
    await assert.rejects(access(applied.seed!), { code: 'ENOENT' });
  });

  it('undefines the VM but leaves its disk image, and the checkpoint bitmaps inside it, alone', async () => {
    // A checkpoint, as change tracking makes them (libvirt 9.0 makes them only on a running VM):
    // a plain libvirt undefine refuses a VM that has one.
    await adapter.start(vm);
    await exec('virsh', ['-c', URI, 'checkpoint-create-as', '--domain', vm, '--name', `test-cp-${suffix}`]);
    await adapter.stop(vm, { mode: 'force' });
    await adapter.undefine(vm);
    await rejectsWith(adapter.getVm(vm), 'VM_NOT_FOUND');
    await access(disk);
    const { stdout } = await exec('qemu-img', ['info', '--output=json', '-U', disk]);
    const bitmaps = (JSON.parse(stdout) as { 'format-specific'?: { data?: { bitmaps?: { name: string }[] } } })['format-specific']?.data?.bitmaps ?? [];
    assert.deepEqual(bitmaps.map((b) => b.name), [`test-cp-${suffix}`]);
  });

  it('removes the networks it made', async () => {
    const bridge = (await network(netA)).bridge!;
    await adapter.removeNetwork(netA);
    await adapter.removeNetwork(netB);
    const names = (await adapter.listNetworks()).map((n) => n.name);
    assert.ok(!names.includes(netA) && !names.includes(netB), names.join(', '));
    await assert.rejects(exec('ip', ['link', 'show', 'dev', bridge]), `bridge ${bridge} is gone`);
    await rejectsWith(adapter.removeNetwork(netA), 'NETWORK_NOT_FOUND');
  });

  async function network(name: string): Promise<NetworkInfo> {
    const found = (await adapter.listNetworks()).find((n) => n.name === name);
    assert.ok(found, `network ${name} is listed`);
    return found;
  }
});
