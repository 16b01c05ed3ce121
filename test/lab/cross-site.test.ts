/**
 * Failover across two sites on the lab: the source site's `vmdr serve` and the DR site's, each
 * with its own config and state file, on this one libvirtd. The DR config cannot reach the
 * source's hypervisor (its URI is a socket that does not exist), so everything the DR side does to
 * the source VM goes through the source site's endpoint: the planned stop and final sync, revert's
 * restart; and when that daemon is killed, the unplanned failover goes on without fencing and a
 * planned one is refused before anything changes.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { bootLabVm, createLabVm, destroyLabVm, GUEST_READY, labBoot, runVmdr, waitForSerialLine, type LabVm } from '../helpers/lab.js';
import { writeTwoSiteConfigs, type TwoSiteConfigs } from '../helpers/two-sites.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';

describe('failover across two sites (two vmdr daemons, the DR side never touches the source hypervisor)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let configs: TwoSiteConfigs;
  let drNetwork: string;
  let drDaemon: ServeProcess | undefined;
  let sourceDaemon: ServeProcess | undefined;
  const target = () => `${vm.name}-dr`;
  const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]).then((r) => r.stdout.trim());
  const state = (name: string) => virsh('domstate', name);
  const fromDr = (...args: string[]) => runVmdr([...args, '--config', configs.dr]);
  const failover = async (...args: string[]) => {
    const r = await fromDr('failover', vm.name, ...args, '--json');
    const line = r.stdout.trim().split('\n').pop() ?? '';
    return { ...r, report: (line.startsWith('{') ? JSON.parse(line) : undefined) as FailoverReport | undefined };
  };
  const role = async () => {
    const r = await fromDr('status', '--json');
    return (JSON.parse(r.stdout) as { protection: string; role: string | null }[]).find((s) => s.protection === vm.name)!.role;
  };

  before(async () => {
    vm = await createLabVm('xsite', { marker: 'xsite-src', diskSize: '32M' });
    drNetwork = `test-dr-${vm.name.slice(-6)}`;
    await vm.adapter.ensureIsolatedNetwork({ name: drNetwork });
    await bootLabVm(vm);
    const boot = labBoot();
    configs = await writeTwoSiteConfigs(vm.dir, {
      oneHost: true,
      protections: `  - name: ${vm.name}
    source: { site: source, vm: ${vm.name} }
    health: { serial: "^VMDR-GUEST ready", timeout: 90s }
    target:
      site: dr
      vm: ${target()}
      hostname: xsite-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${drNetwork} }]
`,
    });
    // The DR site first: the source site's final sync ships to its receiver.
    drDaemon = await startServe(configs.dr, { args: ['--site', 'dr', '--no-replicate'] });
    sourceDaemon = await startServe(configs.source, { args: ['--site', 'source', '--no-replicate'] });
    // The target is staged from the DR side: the source VM's disks come from the source site's endpoint.
    const provision = await fromDr('target', 'provision');
    assert.equal(provision.code, 0, provision.stderr);
    // The first point, shipped by the source site to the DR site's receiver.
    const sync = await runVmdr(['sync', vm.name, '--config', configs.source]);
    assert.equal(sync.code, 0, sync.stderr);
  });

  after(async () => {
    await sourceDaemon?.stop();
    await drDaemon?.stop();
    if (!vm) return;
    await vm.adapter.stop(target(), { mode: 'force' }).catch(() => undefined);
    await vm.adapter.undefine(target()).catch(() => undefined);
    await vm.adapter.removeNetwork(drNetwork).catch(() => undefined);
    await destroyLabVm(vm);
  });

  it('planned: the source daemon shuts its VM down and ships the final point; the target boots it healthy, nothing lost; revert restarts the source through that daemon', async () => {
    const r = await failover('--planned', '--shutdown-timeout', '5s');
    assert.equal(r.code, 0, r.stderr);
    const vmReport = r.report!.vms[0]!;
    assert.equal(vmReport.status, 'healthy');
    assert.equal(vmReport.dataLossWindowMs, 0);
    assert.deepEqual(vmReport.steps.slice(0, 2).map((s) => s.step), ['stop-source', 'final-sync']);
    assert.match(vmReport.guest!, /marker=xsite-src/);
    assert.equal(await state(vm.name), 'shut off');
    assert.equal(await state(target()), 'running');

    const revert = await failover('--revert');
    assert.equal(revert.code, 0, revert.stderr);
    assert.equal(await state(target()), 'shut off');
    assert.equal(await state(vm.name), 'running', 'the source daemon started its VM again');
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 90_000 });
  });

  it('unplanned --force with the source running: the source daemon fences it (off, marked fenced); revert lifts the fence and starts it', async () => {
    const r = await failover('--force');
    assert.equal(r.code, 0, r.stderr);
    const vmReport = r.report!.vms[0]!;
    assert.equal(vmReport.status, 'healthy');
    assert.equal(vmReport.sourceNotFenced, null);
    assert.equal(await state(vm.name), 'shut off');
    assert.match(await virsh('dumpxml', '--inactive', vm.name), /key="role">fenced</);

    const revert = await failover('--revert');
    assert.equal(revert.code, 0, revert.stderr);
    assert.equal(await state(vm.name), 'running');
    assert.doesNotMatch(await virsh('dumpxml', '--inactive', vm.name), /key="role">fenced</, 'the fence was lifted');
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 90_000 });
  });

  it('source daemon killed -9: a planned failover is refused naming the unplanned way, and nothing changes', async () => {
    sourceDaemon!.child.kill('SIGKILL');
    await sourceDaemon!.exited;
    sourceDaemon = undefined;
    const r = await fromDr('failover', vm.name, '--planned');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /^vmdr: a planned failover of "\S+" needs its source site "source", which does not answer.*without --planned.*--force/m);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(await state(target()), 'shut off');
    assert.equal(await role(), 'replicating');
  });

  it('source daemon killed -9: an unplanned failover boots the target and says the source could not be fenced', async () => {
    const r = await failover();
    assert.equal(r.code, 0, r.stderr);
    const vmReport = r.report!.vms[0]!;
    assert.equal(vmReport.status, 'healthy');
    assert.match(vmReport.sourceNotFenced ?? '', /source site "source" did not answer/);
    assert.equal(await state(target()), 'running');
    assert.equal(await state(vm.name), 'running', 'nobody could fence it: its site was not asked through anything else');
    const text = await fromDr('failover', vm.name, '--revert');
    assert.equal(text.code, 0, text.stderr);
    assert.equal(await state(target()), 'shut off');
  });
});
