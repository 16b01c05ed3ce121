/**
 * One plan across two hypervisors: two real lab source VMs (qemu:///system) replicated through a
 * running `vmdr serve`, one onto a pre-staged target on the libvirt DR site, the other onto a
 * pre-staged target on a vSphere DR site (the govmomi simulator). A drill of the plan, a failover
 * of the plan and its revert each run in one command and give one report naming both VMs.
 *
 * Judged by what each side shows: the libvirt target's guest prints its DR identity on its
 * console; the vSphere target is powered on with the point's disk (a VMDK on its datastore)
 * attached, the hostname and address of its customization in its guest info, VMware Tools running.
 * The simulator boots no guest: the guest's own view of its data on vSphere is not checked here
 * (the VMDK's bytes are, by the disk tests); its health check is VMware Tools running.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter, VmInfo } from '../../hypervisors/types.js';
import { readSmallFile, statFile, type DatastoreFile } from '../../hypervisors/vsphere/datastore.js';
import { parseVsphereUri } from '../../hypervisors/vsphere/endpoint.js';
import { retrieve } from '../../hypervisors/vsphere/property-collector.js';
import { VsphereSession } from '../../hypervisors/vsphere/session.js';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { createImage } from '../../plugin/replication/qemu-img.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { targetLabels } from '../../plugin/targets/labels.js';
import { assertProgress, jsonLines, type ProgressEvent } from '../helpers/assertions.js';
import { bootLabVm, createLabVm, destroyLabVm, parseGuestFields, runVmdr, spawnVmdr, type LabVm } from '../helpers/lab.js';
import { labProtection } from '../helpers/protected-vm.js';
import { startVcsim, type Vcsim } from '../helpers/vcsim.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const hex = () => [...randomBytes(2)].map((b) => b.toString(16).padStart(2, '0')).join(':');
// Their own per run: preflight refuses a MAC a running VM has, and other runs may be running.
const KVM_MAC = `52:54:00:db:${hex()}`;
/** VMware's range for MACs set by hand: 00:50:56:00:00:00 to 00:50:56:3f:ff:ff. */
const VS_MAC = `00:50:56:1b:${hex()}`;
/** The simulator's distributed port group: the vSphere target's DR network. */
const PORT_GROUP = 'DC0_DVPG0';

describe('one plan across libvirt and vSphere: drill, failover, revert (qemu:///system + simulator)', function () {
  this.timeout(600_000);
  let kvm: LabVm;
  let vs: LabVm;
  let vcsim: Vcsim;
  let drNetwork: string;
  let config: string;
  let serve: ServeProcess | undefined;
  let vsphere: HypervisorAdapter;
  /** The VMDK the failover uploaded for the vSphere target's disk. */
  let failoverDisk: DatastoreFile | undefined;
  const kvmTarget = () => `${kvm.name}-dr`;
  const vsTarget = () => `${vs.name}-dr`;
  const vmdr = async (...args: string[]) => runVmdr([...args, '--config', config]);
  const ok = async (...args: string[]) => {
    const r = await vmdr(...args);
    assert.equal(r.code, 0, `vmdr ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const failover = async (...args: string[]) => {
    const r = await vmdr('failover', '--plan', 'cross', ...args, '--json');
    const line = r.stdout.trim().split('\n').pop() ?? '';
    return { ...r, report: (line.startsWith('{') ? JSON.parse(line) : undefined) as FailoverReport | undefined };
  };
  const virsh = (...args: string[]) => exec('virsh', ['-c', 'qemu:///system', ...args]).then((r) => r.stdout.trim());
  /** A session of the client core, for what a vSphere user looks at beyond vmdr's VmInfo. */
  const withSession = async <T>(use: (session: VsphereSession) => Promise<T>): Promise<T> => {
    const session = await VsphereSession.open(parseVsphereUri(vcsim.uri(), { passwordFile: join(kvm.dir, 'vsphere-password') }));
    try {
      return await use(session);
    } finally {
      await session.logout();
    }
  };
  const GUEST_PATHS = ['name', 'runtime.powerState', 'guest.hostName', 'guest.ipAddress', 'guest.toolsRunningStatus', 'config.tools.pendingCustomization'];
  /** What vSphere says of a VM: its power, its guest as VMware Tools report it, a customization waiting for its boot. */
  const vsphereVm = (name: string) =>
    withSession(async (session) => {
      const found = await retrieve(session, { type: 'VirtualMachine', paths: GUEST_PATHS });
      return found.find((f) => f.props.name === name)?.props as Record<string, string | undefined> | undefined;
    });
  /** `[LocalDS_0] folder/file.vmdk` as the datastore file API names it. */
  const datastoreFile = (path: string): DatastoreFile => {
    const [, datastore, file] = /^\[([^\]]+)\] (.+)$/.exec(path)!;
    return { datacenter: 'DC0', datastore: datastore!, path: file! };
  };
  const flatExtent = (descriptor: DatastoreFile): DatastoreFile => ({ ...descriptor, path: descriptor.path.replace(/\.vmdk$/, '-flat.vmdk') });
  /** Which VMs of the simulator are a drill's: named after a target. */
  const drillVms = async () => (await vsphere.listVms()).map((v) => v.name).filter((n) => n.startsWith(`${vsTarget()}-drill-`));

  before(async () => {
    vcsim = await startVcsim();
    kvm = await createLabVm('xplan-kvm', { marker: 'xplan-kvm-src', diskSize: '32M' });
    vs = await createLabVm('xplan-vs', { marker: 'xplan-vs-src', diskSize: '32M' });
    drNetwork = `test-dr-${kvm.name.slice(-6)}`;
    await kvm.adapter.ensureIsolatedNetwork({ name: drNetwork });
    await Promise.all([bootLabVm(kvm), bootLabVm(vs)]);
    const passwordFile = join(kvm.dir, 'vsphere-password');
    await writeFile(passwordFile, vcsim.password, { mode: 0o600 });
    config = join(kvm.dir, 'vmdr.yaml');
    await writeFile(
      config,
      `version: 1
state: { path: ${join(kvm.dir, 'state.db')} }
sites:
  - { name: prod, uri: "qemu:///system" }
  - name: dr
    uri: "qemu:///system"
    storage: ${join(kvm.dir, 'replicas')}
    receiver: { listen: "127.0.0.1:${await freeLoopbackPort()}", credentials: ${join(kvm.dir, 'receiver')} }
  - name: dr-vs
    uri: "${vcsim.uri()}"
    storage: ${join(kvm.dir, 'replicas-vs')}
    receiver: { listen: "127.0.0.1:${await freeLoopbackPort()}", credentials: ${join(kvm.dir, 'receiver-vs')} }
    vsphere: { passwordFile: ${passwordFile} }
protections:
${labProtection(kvm, { network: drNetwork, health: true, hostname: 'xplan-kvm-dr', nic: { mac: KVM_MAC, addresses: ['192.0.2.41/24'], gateway: '192.0.2.1', dns: ['192.0.2.53'] } })}  - name: ${vs.name}
    source: { site: prod, vm: ${vs.name} }
    health: { agent: true, timeout: 90s }
    target:
      site: dr-vs
      vm: ${vsTarget()}
      hostname: xplan-vs-dr
      nics: [{ mac: "${VS_MAC}", network: ${PORT_GROUP}, addresses: [192.0.2.42/24], gateway: 192.0.2.1, dns: [192.0.2.53] }]
plans:
  - name: cross
    groups:
      - { name: kvm, vms: [${kvm.name}] }
      - { name: vsphere, vms: [${vs.name}] }
`,
    );
    vsphere = openAdapter(vcsim.uri(), { vsphere: { passwordFile } });
    await vsphere.connect();
    serve = await startServe(config);
    await ok('target', 'provision');
    await ok('protect', kvm.name);
    await ok('protect', vs.name);
  });

  after(async () => {
    await serve?.stop();
    await vsphere?.close().catch(() => undefined);
    await vcsim?.stop();
    for (const name of [kvmTarget(), ...(await virsh('list', '--all', '--name').catch(() => '')).split('\n').filter((n) => n.startsWith(`${kvmTarget()}-drill-`))]) {
      await kvm?.adapter.stop(name, { mode: 'force' }).catch(() => undefined);
      await kvm?.adapter.undefine(name).catch(() => undefined);
    }
    await kvm?.adapter.removeNetwork(drNetwork).catch(() => undefined);
    await destroyLabVm(vs);
    await destroyLabVm(kvm);
  });

  it('provisions both targets: the vSphere one off, on its port group with its MAC, a placeholder of the source disk\'s size, its customization waiting', async () => {
    assert.equal(await virsh('domstate', kvmTarget()), 'shut off');
    const target = await vsphere.getVm(vsTarget());
    assert.equal(target.powerState, 'shutoff');
    assert.deepEqual(target.nics.map((n) => [n.mac, n.network]), [[VS_MAC, PORT_GROUP]]);
    const disks = target.disks.filter((d) => d.device === 'disk');
    assert.deepEqual(disks.map((d) => [d.target, d.format, d.capacityBytes]), [['vda', 'vmdk', 32 * 1024 * 1024]]);
    assert.match(disks[0]!.path!, /^\[LocalDS_0\] /);
    assert.deepEqual(target.labels, targetLabels(vs.name, undefined));
    const seen = (await vsphereVm(vsTarget()))!;
    assert.ok(seen['config.tools.pendingCustomization'], 'the DR identity waits for the first boot as a customization');
    // vmdr status reads both targets, and neither has drifted from its source.
    const status = JSON.parse((await ok('status', '--json')).stdout) as { protection: string; target: { site: string; state: string }; drift: unknown[] }[];
    assert.deepEqual(status.map((s) => [s.protection, s.target.site, s.target.state, s.drift]), [
      [kvm.name, 'dr', 'shutoff', []],
      [vs.name, 'dr-vs', 'shutoff', []],
    ]);
    // Again: nothing to do.
    const again = await ok('target', 'provision', '--json');
    assert.deepEqual((JSON.parse(again.stdout.trim().split('\n').pop()!) as { vm: string; action: string }[]).map((t) => [t.vm, t.action]), [
      [kvmTarget(), 'unchanged'],
      [vsTarget(), 'unchanged'],
    ]);
  });

  it('drills the plan: both come up in bubbles (a linked clone on vSphere), evidence kept, everything removed after', async () => {
    // What the drill VMs look like while the drill runs, seen from each hypervisor.
    const run = spawnVmdr(['failover', '--plan', 'cross', '--test', '--json', '--config', config]);
    let ended = false;
    void run.done.then(() => (ended = true));
    let seen: { vm: VmInfo; cloneOf: string | undefined; bubbles: { vsphere: string[]; libvirt: string[] } } | undefined;
    while (!ended && !seen) {
      const [name] = await drillVms();
      const vm = name ? await vsphere.getVm(name).catch(() => undefined) : undefined;
      if (vm?.powerState === 'running') {
        const extra = await withSession(async (session) => (await retrieve(session, { type: 'VirtualMachine', paths: ['name', 'config.extraConfig'] })).find((f) => f.props.name === name)?.props['config.extraConfig']);
        const cloneOf = (JSON.stringify(extra).match(/"key":"vmdr\.clone-of","value":(?:\{[^}]*"_text":)?"([^"]+)"/) ?? [])[1];
        const bubbles = {
          vsphere: (await vsphere.listNetworks()).filter((n) => n.name.startsWith('vmdr-drill-')).map((n) => n.name),
          libvirt: (await virsh('net-list', '--name')).split('\n').filter((n) => n.startsWith('vmdr-drill-')),
        };
        seen = { vm, cloneOf, bubbles };
      }
      await delay(100);
    }
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.ok(seen, 'the vSphere drill VM was seen running');
    assert.equal(seen.vm.name, `${vsTarget()}-drill-${report.id.slice(-6)}`);
    assert.equal(seen.cloneOf, vsTarget(), 'a linked clone of the target');
    assert.deepEqual(seen.vm.nics.map((n) => [n.mac, n.network]), [[VS_MAC, `vmdr-drill-${report.id.slice(-6)}`]], 'the MAC of production, on the bubble');
    assert.match(seen.vm.disks.find((d) => d.target === 'vda')!.path!, new RegExp(`/drill-${report.id}-vda\\.vmdk$`));
    assert.deepEqual(seen.bubbles, { vsphere: [`vmdr-drill-${report.id.slice(-6)}`], libvirt: [`vmdr-drill-${report.id.slice(-6)}`] }, 'a bubble on each site');
    assert.equal(report.status, 'succeeded');
    const short = report.id.slice(-6);
    assert.deepEqual(report.vms.map((v) => [v.protection, v.status]), [
      [kvm.name, 'healthy'],
      [vs.name, 'healthy'],
    ]);
    assert.equal(parseGuestFields(report.vms[0]!.guest!).hostname, 'xplan-kvm-dr');
    // The vSphere drill VM's evidence: the health check that passed (Tools), the identity it was
    // given, no console and a screenshot recorded as missing (no display), which fails nothing.
    const evidence = report.vms[1]!.evidence!;
    assert.deepEqual(evidence.checks.map((c) => [c.check, c.passed]), [
      ['running', true],
      ['agent', true],
    ]);
    assert.deepEqual(evidence.identity?.expected, { hostname: 'xplan-vs-dr', mac: VS_MAC, ip: '192.0.2.42/24' });
    assert.deepEqual(evidence.console, []);
    assert.match((evidence.screenshot as { missing: string }).missing, /display/i);
    // Everything the drill made is gone from both sites; the targets were never touched.
    assert.deepEqual(await drillVms(), []);
    assert.ok(!(await vsphere.listNetworks()).some((n) => n.name.startsWith(`vmdr-drill-${short}`)), 'the vSphere bubble is gone');
    assert.ok(!(await virsh('net-list', '--all', '--name')).includes(`vmdr-drill-${short}`), 'the libvirt bubble is gone');
    assert.ok(!(await virsh('list', '--all', '--name')).includes(`${kvmTarget()}-drill-${short}`));
    const boot = await withSession((session) => statFile(session, { datacenter: 'DC0', datastore: 'LocalDS_0', path: `vmdr-boot/drill-${report.id}-vda.vmdk` }));
    assert.equal(boot, undefined, "the drill's uploaded disk is deleted");
    assert.equal((await vsphere.getVm(vsTarget())).powerState, 'shutoff');
    assert.equal(await virsh('domstate', kvmTarget()), 'shut off');
  });

  it('fails the plan over in one run: both targets up, one report naming both', async () => {
    const started = Date.now();
    const r = await failover('--force');
    assert.equal(r.code, 0, r.stderr);
    const report = r.report!;
    assert.equal(report.status, 'succeeded');
    assert.deepEqual(report.vms.map((v) => [v.protection, v.targetVm, v.status]), [
      [kvm.name, kvmTarget(), 'healthy'],
      [vs.name, vsTarget(), 'healthy'],
    ]);
    // libvirt: the guest itself says who it is.
    const kvmGuest = parseGuestFields(report.vms[0]!.guest!);
    assert.equal(kvmGuest.hostname, 'xplan-kvm-dr');
    assert.equal(kvmGuest.mac, KVM_MAC);
    assert.equal(kvmGuest.ip, '192.0.2.41/24');
    assert.equal(kvmGuest.marker, 'xplan-kvm-src');
    assert.equal(await virsh('domstate', kvmTarget()), 'running');
    // vSphere: powered on, the point's disk attached, customized, Tools running.
    const target = await vsphere.getVm(vsTarget());
    assert.equal(target.powerState, 'running');
    const disk = target.disks.find((d) => d.target === 'vda')!;
    assert.match(disk.path!, new RegExp(`^\\[LocalDS_0\\] .*/failover-${report.id}-vda\\.vmdk$`), disk.path);
    assert.equal(disk.capacityBytes, 32 * 1024 * 1024);
    // The VMDK holds the source's data: the marker file the lab disk was made with.
    failoverDisk = datastoreFile(disk.path!);
    const flat = await withSession((session) => readSmallFile(session, flatExtent(failoverDisk!), { maxBytes: 64 * 1024 * 1024 }));
    assert.ok(flat?.includes('xplan-vs-src\n'), "the source's marker is on the uploaded disk");
    const seen = (await vsphereVm(vsTarget()))!;
    assert.equal(seen['runtime.powerState'], 'poweredOn');
    assert.equal(seen['guest.hostName'], 'xplan-vs-dr');
    assert.equal(seen['guest.ipAddress'], '192.0.2.42');
    assert.equal(seen['guest.toolsRunningStatus'], 'guestToolsRunning');
    assert.ok(!seen['config.tools.pendingCustomization'], 'the customization was applied at the boot');
    assert.ok(report.vms[1]!.steps.some((s) => s.step === 'health' && s.status === 'done'));
    // The disk's copy onto the datastore reported in bytes, named with the run, the protection and the disk.
    const uploads = assertProgress(jsonLines<ProgressEvent>(r.stdout), ['upload disk']);
    assert.ok(uploads.every((e) => e.unit === 'bytes' && e.subject?.failover === report.id && e.subject?.protection === vs.name && e.subject?.vm === vsTarget() && e.subject?.disk === 'vda'), JSON.stringify(uploads[0]));
    assert.equal(uploads.at(-1)!.total, 32 * 1024 * 1024);
    console.log(`      plan failed over in ${((Date.now() - started) / 1000).toFixed(1)} s (RTO ${(report.rtoMs! / 1000).toFixed(1)} s)`);
  });

  it('reverts the plan: both targets off and back to replication', async () => {
    const r = await failover('--revert');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.report!.status, 'succeeded');
    assert.deepEqual(r.report!.vms.map((v) => v.protection), [kvm.name, vs.name]);
    assert.equal(await virsh('domstate', kvmTarget()), 'shut off');
    const target = await vsphere.getVm(vsTarget());
    assert.equal(target.powerState, 'shutoff');
    const disks = target.disks.filter((d) => d.device === 'disk');
    assert.deepEqual(disks.map((d) => [d.target, d.capacityBytes]), [['vda', 32 * 1024 * 1024]], 'a placeholder again');
    assert.ok(!disks[0]!.path!.includes('failover-'), disks[0]!.path);
    const left = await withSession(async (session) => [await statFile(session, failoverDisk!), await statFile(session, flatExtent(failoverDisk!))]);
    assert.deepEqual(left, [undefined, undefined], "the failover's uploaded disk is deleted");
    // The sources this failover fenced run again, and replication goes on.
    assert.equal(await virsh('domstate', vs.name), 'running');
    assert.equal(await virsh('domstate', kvm.name), 'running');
    await ok('sync', vs.name);
    await ok('sync', kvm.name);
  });

  it('provisions again after the source gained a disk: the vSphere target gets a placeholder of its size', async () => {
    const added = join(vs.dir, 'vdb.qcow2');
    await createImage(added, { sizeBytes: 16 * 1024 * 1024 });
    await vs.adapter.stop(vs.name, { mode: 'force' });
    await vs.adapter.addDisk(vs.name, { path: added, format: 'qcow2', target: 'vdb' });
    const r = await ok('target', 'provision', vs.name, '--json');
    const [result] = JSON.parse(r.stdout.trim().split('\n').pop()!) as { vm: string; action: string; changes: { disk: string; change: string; sizeBytes: number }[] }[];
    assert.deepEqual([result!.vm, result!.action, result!.changes], [vsTarget(), 'updated', [{ disk: 'vdb', change: 'added', sizeBytes: 16 * 1024 * 1024 }]]);
    const disks = (await vsphere.getVm(vsTarget())).disks.filter((d) => d.device === 'disk');
    assert.deepEqual(disks.map((d) => [d.target, d.capacityBytes]), [
      ['vda', 32 * 1024 * 1024],
      ['vdb', 16 * 1024 * 1024],
    ]);
    assert.ok(disks.every((d) => d.path!.startsWith('[LocalDS_0] ')), JSON.stringify(disks));
    // The failover's boot used the customization up and the revert put a placeholder back: the
    // next failover boots a fresh copy of a point, so the DR identity is pending again.
    assert.ok((await vsphereVm(vsTarget()))!['config.tools.pendingCustomization'], 'the identity waits for the next boot again');
  });
});
