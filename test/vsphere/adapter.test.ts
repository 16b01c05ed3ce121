/**
 * The vSphere adapter against govmomi's simulator (a fresh one for this suite, on loopback with
 * TLS; no mocked HTTP): inventory, defining a pre-staged target, power, NIC identity, guest
 * customization, labels, isolated port groups, a drill's linked clone, registering a VM from its
 * files, and VMware Tools as the guest agent.
 *
 * What the simulator cannot show, and so is not checked here:
 * - no guest boots: there is no serial console, no screenshot (the 0.24 simulator has no
 *   CreateScreenshot_Task), and the customization is never run inside a guest. The simulator
 *   applies a pending customization's hostname and address to guest.hostName and guest.net at
 *   power on: that is "what the guest reports" in these tests. Tools running is the test
 *   simulator's stand-in (scripts/lab/vcsim/main.go), not a guest's.
 * - the simulator keeps a port group of one name on the first host only (a second host's
 *   AddPortGroup fails with DuplicateName: it has one Network per datacenter name), so the
 *   isolated network's vSwitch is checked on every host and its port group on the first.
 * - a linked clone's disks are new files on the simulator (it ignores diskMoveType and the
 *   snapshot), and its CloneVM_Task shares the source's device objects with the clone: after a
 *   clone, the simulator reports the source's disks at the clone's new file names (govmomi 0.24,
 *   simulator/virtual_machine.go CloneVMTask). The clone test therefore checks the target's own
 *   disk files on the datastore, its NICs, labels and power state, not the disk paths it reports.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter, PointDisk, VmSpec } from '../../hypervisors/types.js';
import { parseVsphereUri } from '../../hypervisors/vsphere/endpoint.js';
import { items } from '../../hypervisors/vsphere/property-values.js';
import { retrieve } from '../../hypervisors/vsphere/property-collector.js';
import { VsphereSession } from '../../hypervisors/vsphere/session.js';
import type { MoRef } from '../../hypervisors/vsphere/soap.js';
import { waitForTask } from '../../hypervisors/vsphere/task.js';
import { rejectsWith } from '../helpers/assertions.js';
import { startVcsim, type Vcsim } from '../helpers/vcsim.js';

const PASSWORD_ENV = 'VMDR_TEST_VCSIM_PASSWORD';
const exec = promisify(execFile);
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const TARGET = 'test-target';
const MAC_A = '00:50:56:0a:00:01';
const MAC_B = '00:50:56:0a:00:02';

function targetSpec(name = TARGET): VmSpec {
  return {
    name,
    memoryMiB: 512,
    vcpus: 2,
    boot: { kind: 'disk' },
    // A host path: vSphere gets an empty placeholder of the size (what a pre-staged target starts with).
    disks: [
      { path: `/var/lib/vmdr/replica/${name}/vda/base.qcow2`, format: 'qcow2', sizeBytes: 2 * GiB, target: 'vda' },
      { path: `/var/lib/vmdr/replica/${name}/vdb/base.qcow2`, format: 'qcow2', sizeBytes: GiB, target: 'vdb' },
    ],
    nics: [
      { network: 'VM Network', mac: MAC_A },
      { network: 'DC0_DVPG0', mac: MAC_B },
    ],
    labels: { role: 'target', protection: 'web' },
  };
}

describe('vSphere adapter (simulator)', function () {
  this.timeout(120_000);
  let vcsim: Vcsim;
  let adapter: HypervisorAdapter;
  /** The test's own session: what the API answers, read beside the adapter. */
  let session: VsphereSession;

  before(async () => {
    vcsim = await startVcsim();
    process.env[PASSWORD_ENV] = vcsim.password;
    adapter = openAdapter(vcsim.uri(), { vsphere: { passwordEnv: PASSWORD_ENV } });
    await adapter.connect();
    session = await VsphereSession.open(parseVsphereUri(vcsim.uri(), { passwordEnv: PASSWORD_ENV }));
  });

  after(async () => {
    await adapter?.close();
    await session?.logout().catch(() => undefined);
    await vcsim?.stop();
    delete process.env[PASSWORD_ENV];
  });

  async function vmRef(name: string): Promise<MoRef> {
    const [found] = (await retrieve(session, { type: 'VirtualMachine', paths: ['name'] })).filter((v) => v.props.name === name);
    assert.ok(found, `VM ${name} is in the inventory`);
    return found.ref;
  }

  async function vmProps(name: string, paths: string[]): Promise<Record<string, unknown>> {
    const [found] = await retrieve(session, { type: 'VirtualMachine', paths, objects: [await vmRef(name)] });
    return found!.props;
  }

  /** The .vmx and .vmdk files in a folder of LocalDS_0, as the datastore browser lists them. */
  async function datastoreFiles(folder: string): Promise<string[]> {
    const [ds] = await retrieve(session, { type: 'Datastore', paths: ['browser'] });
    const task = await session.call<MoRef>('SearchDatastore_Task', ds!.props.browser as MoRef, { datastorePath: `[LocalDS_0] ${folder}`, searchSpec: { matchPattern: ['*.vmx', '*.vmdk'] } });
    const found = (await waitForTask(session, task, { phase: 'search' })) as { file?: unknown };
    return items<{ path: string }>(found.file).map((f) => f.path);
  }

  describe('connecting', () => {
    it('an endpoint that does not answer is HYPERVISOR_UNREACHABLE; a wrong password VSPHERE_LOGIN_FAILED', async () => {
      const closed = openAdapter(`vsphere://${vcsim.user}@127.0.0.1:1/DC0?thumbprint=${vcsim.thumbprint}`, { vsphere: { passwordEnv: PASSWORD_ENV } });
      await rejectsWith(closed.connect(), 'HYPERVISOR_UNREACHABLE');
      process.env.VMDR_TEST_VCSIM_WRONG = 'not-the-password';
      try {
        await rejectsWith(openAdapter(vcsim.uri(), { vsphere: { passwordEnv: 'VMDR_TEST_VCSIM_WRONG' } }).connect(), 'VSPHERE_LOGIN_FAILED');
      } finally {
        delete process.env.VMDR_TEST_VCSIM_WRONG;
      }
    });

    it('a datastore, pool or folder the datacenter lacks is named at connect', async () => {
      for (const [setting, value] of [['datastore', 'test-no-such-ds'], ['pool', 'test-no-such-pool'], ['folder', '/DC0/vm/test-no-such-folder']] as const) {
        const other = openAdapter(vcsim.uri(), { vsphere: { passwordEnv: PASSWORD_ENV, [setting]: value } });
        const err = await rejectsWith(other.connect(), 'VSPHERE_PLACEMENT_NOT_FOUND');
        assert.equal(err.subject[setting], value);
        await other.close();
      }
    });
  });

  describe('inventory', () => {
    it('lists the datacenter VMs with their hardware and power state', async () => {
      const vms = await adapter.listVms();
      const vm = vms.find((v) => v.name === 'DC0_H0_VM0');
      assert.ok(vm, 'the model VM DC0_H0_VM0 is listed');
      assert.match(vm.id, /^[0-9a-f-]{36}$/);
      assert.equal(vm.powerState, 'running');
      assert.ok(vm.memoryMiB > 0 && vm.vcpus > 0);
      assert.ok(vm.disks.some((d) => d.device === 'disk' && d.path?.startsWith('[LocalDS_0] ') && /^scsi\d+:\d+$/.test(d.target)), JSON.stringify(vm.disks));
      assert.ok(vm.nics.every((n) => /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(n.mac)));
      assert.deepEqual(vm.labels, {});
    });

    it('finds a VM by name, by instance UUID and by inventory path', async () => {
      const byName = await adapter.getVm('DC0_H0_VM0');
      const byId = await adapter.getVm(byName.id);
      const byPath = await adapter.getVm('/DC0/vm/DC0_H0_VM0');
      assert.equal(byId.name, 'DC0_H0_VM0');
      assert.equal(byPath.id, byName.id);
      assert.equal(await adapter.powerState('DC0_H0_VM0'), 'running');
    });

    it('a VM that does not exist is VM_NOT_FOUND, naming it', async () => {
      const err = await rejectsWith(adapter.getVm('test-no-such-vm'), 'VM_NOT_FOUND');
      assert.equal(err.subject.vm, 'test-no-such-vm');
      await rejectsWith(adapter.powerState('test-no-such-vm'), 'VM_NOT_FOUND');
    });
  });

  describe('a pre-staged target', () => {
    it('is defined off, with placeholder disks of the sizes asked, its NICs and its labels', async () => {
      const info = await adapter.defineVm(targetSpec());
      assert.equal(info.name, TARGET);
      assert.equal(info.powerState, 'shutoff');
      assert.equal(info.memoryMiB, 512);
      assert.equal(info.vcpus, 2);
      assert.deepEqual(
        info.disks.filter((d) => d.device === 'disk').map((d) => [d.target, d.path, d.capacityBytes, d.format]),
        [
          ['vda', `[LocalDS_0] ${TARGET}/${TARGET}-vda.vmdk`, 2 * GiB, 'vmdk'],
          ['vdb', `[LocalDS_0] ${TARGET}/${TARGET}-vdb.vmdk`, GiB, 'vmdk'],
        ],
      );
      assert.deepEqual(
        info.nics.map((n) => [n.mac, n.network, n.model]),
        [
          [MAC_A, 'VM Network', 'vmxnet3'],
          [MAC_B, 'DC0_DVPG0', 'vmxnet3'],
        ],
      );
      assert.deepEqual(info.labels, { role: 'target', protection: 'web' });
      // What vSphere itself says: the disks are on the datastore, the NICs' MACs are manual.
      const props = await vmProps(TARGET, ['config.hardware.device', 'config.files.vmPathName']);
      assert.equal(props['config.files.vmPathName'], `[LocalDS_0] ${TARGET}/${TARGET}.vmx`);
      const nics = items<{ addressType?: string; macAddress?: string }>(props['config.hardware.device']).filter((d) => d.macAddress);
      assert.deepEqual(nics.map((n) => n.addressType), ['manual', 'manual']);
    });

    it('is listed when asked for by name, and not among the running VMs; both filters: the named VMs that run', async () => {
      const names = (vms: { name: string }[]) => vms.map((v) => v.name).sort();
      const named = await adapter.listVms({ names: [TARGET, 'DC0_H0_VM0', 'test-no-such-vm'] });
      assert.deepEqual(names(named), ['DC0_H0_VM0', TARGET].sort());
      // The same VM as the whole list has it.
      assert.deepEqual(named.find((v) => v.name === TARGET), (await adapter.listVms()).find((v) => v.name === TARGET));
      const running = await adapter.listVms({ running: true });
      assert.ok(running.some((v) => v.name === 'DC0_H0_VM0'));
      assert.ok(!running.some((v) => v.name === TARGET));
      assert.ok(running.every((v) => v.powerState === 'running'));
      assert.deepEqual(names(await adapter.listVms({ names: [TARGET, 'DC0_H0_VM0'], running: true })), ['DC0_H0_VM0']);
      assert.deepEqual(await adapter.listVms({ names: ['test-no-such-vm'] }), []);
    });

    it('a second define of the name is VM_ALREADY_EXISTS; a kernel boot is UNSUPPORTED', async () => {
      await rejectsWith(adapter.defineVm(targetSpec()), 'VM_ALREADY_EXISTS');
      const err = await rejectsWith(adapter.defineVm({ ...targetSpec('test-kernel'), boot: { kind: 'kernel', kernel: '/k', initrd: '/i', cmdline: '' } }), 'UNSUPPORTED');
      assert.match(err.message, /test-kernel/);
      await rejectsWith(adapter.getVm('test-kernel'), 'VM_NOT_FOUND');
    });

    it('a NIC on a network the datacenter lacks is NETWORK_NOT_FOUND, and no VM is made', async () => {
      await rejectsWith(adapter.defineVm({ ...targetSpec('test-badnet'), nics: [{ network: 'test-no-such-net' }] }), 'NETWORK_NOT_FOUND');
      await rejectsWith(adapter.getVm('test-badnet'), 'VM_NOT_FOUND');
    });

    it('takes a new NIC identity (MAC and port group) while off', async () => {
      const info = await adapter.setNicIdentity(TARGET, MAC_B, { mac: '00:50:56:0a:00:03', network: 'VM Network' });
      assert.deepEqual(
        info.nics.map((n) => [n.mac, n.network]),
        [
          [MAC_A, 'VM Network'],
          ['00:50:56:0a:00:03', 'VM Network'],
        ],
      );
      await rejectsWith(adapter.setNicIdentity(TARGET, '00:50:56:ff:ff:ff', { network: 'VM Network' }), 'NIC_NOT_FOUND');
      await rejectsWith(adapter.setNicIdentity(TARGET, MAC_A, { mac: '00:50:56:0a:00:03' }), 'INVALID_NIC_IDENTITY');
      const back = await adapter.setNicIdentity(TARGET, '00:50:56:0a:00:03', { mac: MAC_B, network: 'DC0_DVPG0' });
      assert.deepEqual(back.nics.map((n) => n.network), ['VM Network', 'DC0_DVPG0']);
    });

    it('adds a disk under the name asked, and refuses a name it has', async () => {
      const info = await adapter.addDisk(TARGET, { path: '/var/lib/vmdr/replica/vdc/base.qcow2', format: 'qcow2', sizeBytes: GiB / 2, target: 'vdc' });
      const vdc = info.disks.find((d) => d.target === 'vdc');
      assert.equal(vdc?.capacityBytes, GiB / 2);
      assert.equal(vdc?.path, `[LocalDS_0] ${TARGET}/${TARGET}-vdc.vmdk`);
      await rejectsWith(adapter.addDisk(TARGET, { path: '/x.qcow2', format: 'qcow2', sizeBytes: GiB, target: 'vda' }), 'DEFINITION_REJECTED');
    });

    it('points disks at datastore files, and back at their placeholders for a path of this host', async () => {
      const [dc] = await retrieve(session, { type: 'Datacenter', paths: ['name'] });
      await session.call('MakeDirectory', session.content.fileManager!, { name: '[LocalDS_0] test-boot', datacenter: dc!.ref, createParentDirectories: true });
      const made = await session.call<MoRef>('CreateVirtualDisk_Task', session.content.virtualDiskManager!, {
        name: '[LocalDS_0] test-boot/failover-1-vda.vmdk',
        datacenter: dc!.ref,
        spec: { _type: 'FileBackedVirtualDiskSpec', diskType: 'thin', adapterType: 'lsiLogic', capacityKb: 2 * 1024 * 1024 },
      });
      await waitForTask(session, made, { phase: 'test disk' });
      const pointed = await adapter.setDiskImages(TARGET, [{ target: 'vda', path: '[LocalDS_0] test-boot/failover-1-vda.vmdk', format: 'vmdk' }]);
      assert.deepEqual(pointed.disks.map((d) => [d.target, d.path]), [
        ['vda', '[LocalDS_0] test-boot/failover-1-vda.vmdk'],
        ['vdb', `[LocalDS_0] ${TARGET}/${TARGET}-vdb.vmdk`],
        ['vdc', `[LocalDS_0] ${TARGET}/${TARGET}-vdc.vmdk`],
      ]);
      await rejectsWith(adapter.setDiskImages(TARGET, [{ target: 'vdz', path: '[LocalDS_0] x.vmdk', format: 'vmdk' }]), 'DISK_NOT_FOUND');
      await rejectsWith(adapter.setDiskImages(TARGET, [{ target: 'vda', path: '[LocalDS_0] test-boot/no-such.vmdk', format: 'vmdk' }]), 'VSPHERE_FILE_NOT_FOUND');
      const back = await adapter.setDiskImages(TARGET, [{ target: 'vda', path: '/var/lib/vmdr/replica/web/vda/base.qcow2', format: 'qcow2' }]);
      assert.deepEqual(back.disks.map((d) => [d.target, d.path, d.capacityBytes]).slice(0, 1), [['vda', `[LocalDS_0] ${TARGET}/${TARGET}-vda.vmdk`, 2 * GiB]]);
    });

    it('labels are replaced, and an empty set removes them', async () => {
      await adapter.setLabels(TARGET, { role: 'promoted', protection: 'web', failover: 'f-1' });
      assert.deepEqual((await adapter.getVm(TARGET)).labels, { role: 'promoted', protection: 'web', failover: 'f-1' });
      await adapter.setLabels(TARGET, { role: 'target', protection: 'web' });
      assert.deepEqual((await adapter.getVm(TARGET)).labels, { role: 'target', protection: 'web' });
      await adapter.setLabels(TARGET, {});
      assert.deepEqual((await adapter.getVm(TARGET)).labels, {});
      await adapter.setLabels(TARGET, { role: 'target', protection: 'web' });
    });
  });

  describe("a recovery point's boot disks", () => {
    let dir: string;
    let vda: PointDisk;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'vmdr-vsphere-adapter-'));
      vda = { target: 'vda', image: join(dir, 'vda.qcow2'), sizeBytes: 4 * MiB };
      await exec('qemu-img', ['create', '-q', '-f', 'qcow2', vda.image, String(vda.sizeBytes)]);
      await exec('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 1M 64k', vda.image]);
    });

    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("a failover's: VMDKs in the target's own folder, its disk pointed at them and its labels replaced, kept on a second call", async () => {
      const labels = { role: 'promoted', protection: 'web', failover: 'f-9' };
      const disks = await adapter.prepareBootDisks({ boot: 'failover-f-9', disks: [vda], vm: TARGET, labels });
      assert.deepEqual(disks, [{ target: 'vda', path: `[LocalDS_0] ${TARGET}/failover-f-9-vda.vmdk`, format: 'vmdk' }]);
      const info = await adapter.getVm(TARGET);
      assert.equal(info.disks.find((d) => d.target === 'vda')?.path, `[LocalDS_0] ${TARGET}/failover-f-9-vda.vmdk`);
      assert.deepEqual(info.labels, labels);
      assert.deepEqual(await adapter.prepareBootDisks({ boot: 'failover-f-9', disks: [vda], vm: TARGET, labels }), disks);
      assert.ok((await datastoreFiles(TARGET)).includes('failover-f-9-vda-flat.vmdk'));
    });

    it("a drill's (no VM): in vmdr-boot/; a release removes exactly one boot's files", async () => {
      const disks = await adapter.prepareBootDisks({ boot: 'drill-d-1', disks: [vda] });
      assert.deepEqual(disks, [{ target: 'vda', path: '[LocalDS_0] vmdr-boot/drill-d-1-vda.vmdk', format: 'vmdk' }]);
      await adapter.releaseBootDisks({ boot: 'drill-d-1', disks: [vda] });
      assert.ok(!(await datastoreFiles('vmdr-boot')).some((f) => f.startsWith('drill-d-1-')));
      assert.ok((await datastoreFiles(TARGET)).includes('failover-f-9-vda.vmdk'), "the failover's are still there");
      // Nothing left to remove is not an error.
      await adapter.releaseBootDisks({ boot: 'drill-d-1', disks: [vda] });
    });

    it('a revert: the target back on its placeholder, then the failover disks released from its folder', async () => {
      await adapter.setDiskImages(TARGET, [{ target: 'vda', path: '/var/lib/vmdr/replica/web/vda/base.qcow2', format: 'qcow2' }]);
      await adapter.setLabels(TARGET, { role: 'target', protection: 'web' });
      await adapter.releaseBootDisks({ boot: 'failover-f-9', disks: [vda] });
      const files = await datastoreFiles(TARGET);
      assert.ok(!files.some((f) => f.startsWith('failover-f-9-')), files.join(', '));
      assert.ok(files.includes(`${TARGET}-vda.vmdk`));
      assert.equal((await adapter.getVm(TARGET)).disks.find((d) => d.target === 'vda')?.path, `[LocalDS_0] ${TARGET}/${TARGET}-vda.vmdk`);
    });
  });

  describe('power', () => {
    it('powers on and off; powering on a VM that is on is the server fault INVALID_POWER_STATE', async () => {
      await adapter.start(TARGET);
      assert.equal(await adapter.powerState(TARGET), 'running');
      const err = await rejectsWith(adapter.start(TARGET), 'INVALID_POWER_STATE');
      assert.equal(err.subject.vm, TARGET);
      await adapter.stop(TARGET, { mode: 'force' });
      assert.equal(await adapter.powerState(TARGET), 'shutoff');
      // Off already: a stop has nothing to do.
      await adapter.stop(TARGET, { mode: 'force' });
    });

    it('a graceful stop asks the guest (ShutdownGuest) and returns once the VM is off', async () => {
      await adapter.start(TARGET);
      await adapter.stop(TARGET, { mode: 'graceful', timeoutMs: 10_000 });
      assert.equal(await adapter.powerState(TARGET), 'shutoff');
    });

    it('what needs the VM off refuses a running one with INVALID_POWER_STATE', async () => {
      await adapter.start(TARGET);
      try {
        await rejectsWith(adapter.setNicIdentity(TARGET, MAC_A, { network: 'VM Network' }), 'INVALID_POWER_STATE');
        await rejectsWith(adapter.undefine(TARGET), 'INVALID_POWER_STATE');
      } finally {
        await adapter.stop(TARGET, { mode: 'force' });
      }
    });
  });

  describe('VMware Tools as the guest agent', () => {
    it('an off VM is INVALID_POWER_STATE; just powered on, not-answering; then Tools answer', async () => {
      await rejectsWith(adapter.guestAgentPing(TARGET, 1000), 'INVALID_POWER_STATE');
      await adapter.start(TARGET);
      try {
        // The simulator's Tools stand-in starts 500 ms after power on; a guest that just booted
        // shows Tools "not installed" until they first run, which is no reason to stop asking.
        const early = await rejectsWith(adapter.guestAgentPing(TARGET, 50), 'GUEST_AGENT_UNAVAILABLE');
        assert.equal(early.subject.reason, 'not-answering');
        await adapter.guestAgentPing(TARGET, 10_000);
      } finally {
        await adapter.stop(TARGET, { mode: 'force' });
      }
    });
  });

  describe('guest customization', () => {
    const identity = {
      instanceId: 'vmdr-test-target-0001',
      hostname: 'web1.dr.example',
      nics: [{ mac: MAC_A, network: 'VM Network', addresses: ['10.20.30.40/24'], gateway: '10.20.30.1', dns: ['10.20.30.2'] }],
    };

    it('refuses invalid values before anything changes (IDENTITY_INVALID)', async () => {
      await rejectsWith(adapter.applyGuestIdentity(TARGET, { ...identity, hostname: 'not a hostname' }), 'IDENTITY_INVALID');
      await rejectsWith(adapter.applyGuestIdentity(TARGET, { ...identity, nics: [{ ...identity.nics[0]!, addresses: ['10.0.0.1/24', '10.0.0.2/24'] }] }), 'IDENTITY_INVALID');
      assert.equal((await vmProps(TARGET, ['config.tools.pendingCustomization']))['config.tools.pendingCustomization'] ?? '', '');
    });

    it('applies the identity; the same one again is written: false; the guest reports the hostname and address at boot', async () => {
      const applied = await adapter.applyGuestIdentity(TARGET, identity);
      assert.equal(applied.written, true);
      assert.deepEqual(applied.nics.map((n) => n.mac), [MAC_A, MAC_B]);
      const again = await adapter.applyGuestIdentity(TARGET, identity);
      assert.equal(again.written, false);
      assert.deepEqual((await adapter.getVm(TARGET)).labels, { role: 'target', protection: 'web' }, 'the identity is not one of the labels');

      await adapter.start(TARGET);
      try {
        const guest = await vmProps(TARGET, ['guest.hostName', 'guest.net']);
        assert.equal(guest['guest.hostName'], 'web1');
        const net = items<{ macAddress?: string; ipAddress?: unknown }>(guest['guest.net']);
        assert.deepEqual(items(net.find((n) => n.macAddress === MAC_A)?.ipAddress), ['10.20.30.40']);
      } finally {
        await adapter.stop(TARGET, { mode: 'force' });
      }
    });

    it('another identity while one is still pending is IDENTITY_PENDING (vSphere takes none back), and nothing changes', async () => {
      await adapter.applyGuestIdentity(TARGET, { ...identity, instanceId: 'vmdr-test-target-0002' });
      const moved = { ...identity, instanceId: 'vmdr-test-target-0003', hostname: 'web2', nics: [{ ...identity.nics[0]!, network: 'DC0_DVPG0' }] };
      const err = await rejectsWith(adapter.applyGuestIdentity(TARGET, moved), 'IDENTITY_PENDING');
      assert.match(err.remedy ?? '', /power the VM on once/);
      assert.equal((await adapter.getVm(TARGET)).nics[0]?.network, 'VM Network', 'its NIC was not moved');
      assert.equal((await adapter.applyGuestIdentity(TARGET, { ...identity, instanceId: 'vmdr-test-target-0002' })).written, false, 'the pending one is still the one it has');
      await adapter.start(TARGET);
      await adapter.stop(TARGET, { mode: 'force' });
    });

    it('an identity a boot used up is given again: the next boot may be a fresh copy of a point (a failover after a revert)', async () => {
      await adapter.removeGuestIdentity(TARGET);
      assert.equal((await adapter.applyGuestIdentity(TARGET, identity)).written, true);
      await adapter.start(TARGET);
      await adapter.stop(TARGET, { mode: 'force' });
      assert.equal((await vmProps(TARGET, ['config.tools.pendingCustomization']))['config.tools.pendingCustomization'] ?? '', '', 'the boot applied it');
      assert.equal((await adapter.applyGuestIdentity(TARGET, identity)).written, true);
      assert.notEqual((await vmProps(TARGET, ['config.tools.pendingCustomization']))['config.tools.pendingCustomization'] ?? '', '', 'pending again for the next boot');
      await adapter.start(TARGET);
      await adapter.stop(TARGET, { mode: 'force' });
    });

    it('a removed identity is given again on the next apply', async () => {
      await adapter.removeGuestIdentity(TARGET);
      assert.equal((await adapter.applyGuestIdentity(TARGET, identity)).written, true);
      await adapter.start(TARGET);
      await adapter.stop(TARGET, { mode: 'force' });
    });
  });

  describe('isolated networks', () => {
    const BUBBLE = 'test-bubble';

    async function hostNetworks(): Promise<{ host: string; vswitches: { name: string; pnic: number }[]; portgroups: string[] }[]> {
      const [cluster] = await retrieve(session, { type: 'ClusterComputeResource', paths: ['host'] });
      const hosts = await retrieve(session, { type: 'HostSystem', paths: ['name', 'configManager.networkSystem'], objects: items<MoRef>(cluster!.props.host) });
      const result = [];
      for (const h of hosts) {
        const [ns] = await retrieve(session, { type: 'HostNetworkSystem', paths: ['networkInfo'], objects: [h.props['configManager.networkSystem'] as MoRef] });
        const info = ns!.props.networkInfo as { vswitch?: unknown; portgroup?: unknown };
        result.push({
          host: String(h.props.name),
          vswitches: items<{ name: string; pnic?: unknown }>(info.vswitch).map((v) => ({ name: v.name, pnic: items(v.pnic).length })),
          portgroups: items<{ spec: { name: string } }>(info.portgroup).map((p) => p.spec.name),
        });
      }
      return result;
    }

    it('is a port group on a vSwitch without uplinks, made on every host of the cluster, idempotent', async () => {
      const made = await adapter.ensureIsolatedNetwork({ name: BUBBLE, labels: { role: 'drill', failover: 'f-2' } });
      assert.deepEqual(made, { name: BUBBLE, bridge: `vmdr-${BUBBLE}`, active: true, isolated: true, labels: { role: 'drill', failover: 'f-2' } });
      const hosts = await hostNetworks();
      assert.ok(hosts.length >= 2, 'the cluster has several hosts');
      for (const h of hosts) assert.deepEqual(h.vswitches.find((v) => v.name === `vmdr-${BUBBLE}`), { name: `vmdr-${BUBBLE}`, pnic: 0 }, h.host);
      assert.ok(hosts.some((h) => h.portgroups.includes(BUBBLE)));
      assert.deepEqual(await adapter.ensureIsolatedNetwork({ name: BUBBLE, labels: { role: 'drill', failover: 'f-2' } }), made);
      const listed = await adapter.listNetworks();
      assert.deepEqual(listed.find((n) => n.name === BUBBLE), made);
      const vmNetwork = listed.find((n) => n.name === 'VM Network');
      assert.equal(vmNetwork?.isolated, false);
      assert.equal(vmNetwork?.labels, undefined);
      assert.deepEqual(listed.find((n) => n.name === 'DC0_DVPG0'), { name: 'DC0_DVPG0', active: true, isolated: false });
    });

    it('made at once by several callers, in one vmdr and in two, it is made once', async () => {
      const other = openAdapter(vcsim.uri(), { vsphere: { passwordEnv: PASSWORD_ENV } });
      try {
        const spec = { name: 'test-bubble-race', labels: { role: 'drill' } };
        const made = await Promise.all([adapter.ensureIsolatedNetwork(spec), adapter.ensureIsolatedNetwork(spec), other.ensureIsolatedNetwork(spec)]);
        for (const m of made) assert.deepEqual(m, { name: 'test-bubble-race', bridge: 'vmdr-test-bubble-race', active: true, isolated: true, labels: { role: 'drill' } });
        for (const h of await hostNetworks()) assert.equal(h.vswitches.filter((v) => v.name === 'vmdr-test-bubble-race').length, 1, h.host);
        await Promise.all([adapter.removeNetwork('test-bubble-race'), other.removeNetwork('test-bubble-race')]).catch((err: unknown) => {
          // One of the two may find it gone before it looked: that one says so.
          if ((err as { code?: string }).code !== 'NETWORK_NOT_FOUND') throw err;
        });
        assert.ok(!(await adapter.listNetworks()).some((n) => n.name === 'test-bubble-race'));
        for (const h of await hostNetworks()) assert.ok(!h.vswitches.some((v) => v.name === 'vmdr-test-bubble-race'), h.host);
      } finally {
        await other.close();
      }
    });

    it('a network vmdr did not make is not removed (NOT_MANAGED_BY_VMDR); a missing one is NETWORK_NOT_FOUND', async () => {
      await rejectsWith(adapter.removeNetwork('VM Network'), 'NOT_MANAGED_BY_VMDR');
      await rejectsWith(adapter.removeNetwork('test-no-such-net'), 'NETWORK_NOT_FOUND');
      await rejectsWith(adapter.ensureIsolatedNetwork({ name: 'VM Network' }), 'NETWORK_CONFLICT');
    });

    it('is removed from every host, with its vSwitch', async () => {
      await adapter.removeNetwork(BUBBLE);
      for (const h of await hostNetworks()) {
        assert.ok(!h.portgroups.includes(BUBBLE), h.host);
        assert.ok(!h.vswitches.some((v) => v.name === `vmdr-${BUBBLE}`), h.host);
      }
      assert.ok(!(await adapter.listNetworks()).some((n) => n.name === BUBBLE));
    });
  });

  describe("a drill's linked clone", () => {
    const BUBBLE = 'test-drill-bubble';
    const DRILL_VM = `${TARGET}-drill-1`;
    const bootDisk = (target: string) => `[LocalDS_0] vmdr-boot/drill-1-${target}.vmdk`;

    before(async () => {
      // The drill's boot disks, as vs-disks' materialization leaves them on the datastore.
      const [dc] = await retrieve(session, { type: 'Datacenter', paths: ['name'] });
      await session.call('MakeDirectory', session.content.fileManager!, { name: '[LocalDS_0] vmdr-boot', datacenter: dc!.ref, createParentDirectories: true });
      for (const target of ['vda', 'vdb', 'vdc']) {
        const task = await session.call<MoRef>('CreateVirtualDisk_Task', session.content.virtualDiskManager!, {
          name: bootDisk(target),
          datacenter: dc!.ref,
          spec: { _type: 'FileBackedVirtualDiskSpec', diskType: 'thin', adapterType: 'lsiLogic', capacityKb: 1024 * 1024 },
        });
        await waitForTask(session, task, { phase: 'test disk' });
      }
    });

    it('is a linked clone of the target from its vmdr-drill-base snapshot, on the bubble, on the boot disks, labelled', async () => {
      await adapter.ensureIsolatedNetwork({ name: BUBBLE });
      const before = await adapter.getVm(TARGET);
      const spec: VmSpec = {
        ...targetSpec(DRILL_VM),
        cloneOf: TARGET,
        disks: ['vda', 'vdb', 'vdc'].map((t) => ({ path: bootDisk(t), format: 'vmdk', target: t })),
        nics: before.nics.map((n) => ({ network: BUBBLE, mac: n.mac })),
        labels: { role: 'drill', protection: 'web', failover: 'f-3' },
      };
      const clone = await adapter.defineVm(spec);
      assert.equal(clone.powerState, 'shutoff');
      assert.notEqual(clone.id, before.id);
      assert.deepEqual(clone.nics.map((n) => [n.mac, n.network]), before.nics.map((n) => [n.mac, BUBBLE]));
      assert.deepEqual(clone.disks.filter((d) => d.device === 'disk').map((d) => [d.target, d.path]), ['vda', 'vdb', 'vdc'].map((t) => [t, bootDisk(t)]));
      assert.deepEqual(clone.labels, { role: 'drill', protection: 'web', failover: 'f-3' });
      const snapshot = (await vmProps(TARGET, ['snapshot'])).snapshot as { rootSnapshotList?: unknown };
      assert.deepEqual(items<{ name: string }>(snapshot.rootSnapshotList).map((s) => s.name), ['vmdr-drill-base']);

      // A second drill reuses the snapshot.
      const second = await adapter.defineVm({ ...spec, name: `${DRILL_VM}b` });
      assert.equal(second.name, `${DRILL_VM}b`);
      const again = (await vmProps(TARGET, ['snapshot'])).snapshot as { rootSnapshotList?: unknown };
      assert.equal(items(again.rootSnapshotList).length, 1);
      assert.equal(items((items<{ childSnapshotList?: unknown }>(again.rootSnapshotList)[0] ?? {}).childSnapshotList).length, 0);
    });

    it('boots, and its removal destroys it; the snapshot stays and the target keeps its NICs, labels and state', async () => {
      await adapter.start(DRILL_VM);
      await adapter.guestAgentPing(DRILL_VM, 10_000);
      await adapter.stop(DRILL_VM, { mode: 'force' });
      const target = await adapter.getVm(TARGET);
      for (const vm of [DRILL_VM, `${DRILL_VM}b`]) await adapter.undefine(vm);
      await rejectsWith(adapter.getVm(DRILL_VM), 'VM_NOT_FOUND');
      const after = await adapter.getVm(TARGET);
      assert.deepEqual([after.nics, after.labels, after.powerState], [target.nics, target.labels, 'shutoff']);
      // Its disk files are where they were (see the header for what the simulator reports instead).
      const files = await datastoreFiles(TARGET);
      for (const d of ['vda', 'vdb', 'vdc']) assert.ok(files.includes(`${TARGET}-${d}.vmdk`), `${TARGET}-${d}.vmdk in ${files.join(', ')}`);
      const snapshot = (await vmProps(TARGET, ['snapshot'])).snapshot as { rootSnapshotList?: unknown };
      assert.deepEqual(items<{ name: string }>(snapshot.rootSnapshotList).map((s) => s.name), ['vmdr-drill-base']);
      await adapter.removeNetwork(BUBBLE);
    });

    it('a clone of a VM that does not exist is VM_NOT_FOUND; of other NICs DEFINITION_REJECTED; one half made is destroyed', async () => {
      await rejectsWith(adapter.defineVm({ ...targetSpec('test-clone-x'), cloneOf: 'test-no-such-vm', disks: [] }), 'VM_NOT_FOUND');
      await rejectsWith(adapter.defineVm({ ...targetSpec('test-clone-x'), cloneOf: TARGET, disks: [], nics: [{ network: 'VM Network' }] }), 'DEFINITION_REJECTED');
      // Cloned, then its disk cannot be attached: the half-made clone is destroyed, not left for a resumed drill to boot.
      const nics = (await adapter.getVm(TARGET)).nics.map((n) => ({ network: 'VM Network', mac: n.mac }));
      await rejectsWith(adapter.defineVm({ ...targetSpec('test-clone-x'), cloneOf: TARGET, nics, disks: [{ path: '[LocalDS_0] vmdr-boot/no-such.vmdk', format: 'vmdk', target: 'vda' }] }), 'VSPHERE_FILE_NOT_FOUND');
      await rejectsWith(adapter.getVm('test-clone-x'), 'VM_NOT_FOUND');
    });
  });

  describe('a drill, in the order the plugin runs it (plugin/failover/drill.ts)', () => {
    let dir: string;
    let vda: PointDisk;
    const BUBBLE = 'vmdr-drill-abc123-acme';
    const DRILL_VM = `${TARGET}-drill-abc123`;
    const BOOT = 'drill-run-abc123';

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'vmdr-vsphere-drill-'));
      vda = { target: 'vda', image: join(dir, 'vda.qcow2'), sizeBytes: 2 * MiB };
      await exec('qemu-img', ['create', '-q', '-f', 'qcow2', vda.image, String(vda.sizeBytes)]);
    });

    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('bubble, boot disks, clone, identity, boot, Tools; then everything it made is gone and the target is as it was', async () => {
      const target = await adapter.getVm(TARGET);
      const bubble = await adapter.ensureIsolatedNetwork({ name: BUBBLE, labels: { role: 'drill', failover: 'run-abc123', tenant: 'acme' } });
      assert.equal(bubble.isolated, true);
      const disks = await adapter.prepareBootDisks({ boot: BOOT, disks: [vda] });
      await rejectsWith(adapter.getVm(DRILL_VM), 'VM_NOT_FOUND');
      await adapter.defineVm({
        name: DRILL_VM,
        memoryMiB: target.memoryMiB,
        vcpus: target.vcpus,
        boot: { kind: 'disk' },
        disks: disks.map((d) => ({ path: d.path, format: d.format, target: d.target })),
        nics: target.nics.map((n) => ({ network: BUBBLE, mac: n.mac })),
        labels: { role: 'drill', protection: 'web', failover: 'run-abc123', tenant: 'acme' },
        cloneOf: TARGET,
      });
      const applied = await adapter.applyGuestIdentity(DRILL_VM, {
        instanceId: 'vmdr-drill-0001',
        hostname: 'web1',
        nics: [{ mac: target.nics[0]!.mac, network: BUBBLE, addresses: ['10.9.8.7/16'] }],
      });
      assert.equal(applied.written, true);
      assert.deepEqual(applied.nics.map((n) => n.network), [BUBBLE, BUBBLE]);
      await adapter.start(DRILL_VM);
      await adapter.guestAgentPing(DRILL_VM, 10_000);
      const guest = await vmProps(DRILL_VM, ['guest.hostName', 'guest.net']);
      assert.equal(guest['guest.hostName'], 'web1');
      assert.deepEqual(items(items<{ ipAddress?: unknown }>(guest['guest.net'])[0]?.ipAddress), ['10.9.8.7']);
      await rejectsWith(adapter.screenshot(DRILL_VM), 'NO_DISPLAY');

      // removeDrill
      await adapter.stop(DRILL_VM, { mode: 'force' });
      await adapter.removeGuestIdentity(DRILL_VM);
      await adapter.undefine(DRILL_VM);
      await adapter.releaseBootDisks({ boot: BOOT, disks: [vda] });
      await adapter.removeNetwork(BUBBLE);

      await rejectsWith(adapter.getVm(DRILL_VM), 'VM_NOT_FOUND');
      assert.ok(!(await datastoreFiles('vmdr-boot')).some((f) => f.startsWith(`${BOOT}-`)));
      await rejectsWith(datastoreFiles(DRILL_VM), 'VSPHERE_FILE_NOT_FOUND'); // the clone's folder is gone with it
      assert.ok(!(await adapter.listNetworks()).some((n) => n.name === BUBBLE));
      const after = await adapter.getVm(TARGET);
      assert.deepEqual([after.nics, after.labels, after.powerState], [target.nics, target.labels, 'shutoff']);
    });
  });

  describe('undefine and register from datastore files', () => {
    it('undefine unregisters the target and leaves its files; defining it again registers it from them', async () => {
      const before = await adapter.getVm(TARGET);
      await adapter.undefine(TARGET);
      await rejectsWith(adapter.getVm(TARGET), 'VM_NOT_FOUND');
      // Its files are still on the datastore.
      const files = await datastoreFiles(TARGET);
      for (const f of [`${TARGET}.vmx`, `${TARGET}-vda.vmdk`]) assert.ok(files.includes(f), `${f} in ${files.join(', ')}`);

      const registered = await adapter.defineVm(targetSpec());
      assert.equal(registered.name, TARGET);
      assert.equal(registered.id, before.id, 'the same VM, by its instance UUID');
      assert.deepEqual(registered.labels, { role: 'target', protection: 'web' });
      assert.equal((await vmProps(TARGET, ['config.files.vmPathName']))['config.files.vmPathName'], `[LocalDS_0] ${TARGET}/${TARGET}.vmx`);
    });
  });

  describe('a VM on datastore files vmdr did not make', () => {
    it('attaches a datastore disk as it is, and undefining the VM leaves the file', async () => {
      const spec: VmSpec = { ...targetSpec('test-attach'), disks: [{ path: '[LocalDS_0] test-boot/failover-1-vda.vmdk', format: 'vmdk', target: 'vda' }], nics: [{ network: 'VM Network', model: 'e1000' }], labels: {} };
      const info = await adapter.defineVm(spec);
      // Its size is the file's: vCenter reads it, the simulator does not (capacityBytes is then absent, never 0).
      assert.deepEqual(info.disks.map((d) => [d.target, d.path, d.capacityBytes ?? 'unknown']), [['vda', '[LocalDS_0] test-boot/failover-1-vda.vmdk', 'unknown']]);
      assert.equal(info.nics[0]?.model, 'e1000');
      assert.match(info.nics[0]?.mac ?? '', /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'vSphere gave it a MAC');
      await adapter.undefine('test-attach');
      assert.ok((await datastoreFiles('test-boot')).includes('failover-1-vda.vmdk'));
    });
  });

  describe('what vSphere has no counterpart for', () => {
    it('no screenshot (NO_DISPLAY), no console file, no disk writer, no autostart, no image user', async () => {
      await rejectsWith(adapter.screenshot(TARGET), 'NO_DISPLAY');
      assert.equal(await adapter.serialLogPath(TARGET), undefined);
      await rejectsWith(adapter.openDiskWriter(TARGET, 'vda'), 'UNSUPPORTED');
      await rejectsWith(adapter.setAutostart(TARGET, false), 'UNSUPPORTED');
      assert.equal(await adapter.imageUser(), undefined);
      assert.equal(adapter.changeTracker, undefined);
      assert.equal(adapter.kind, 'vsphere');
    });
  });
});
