/**
 * The watch on the namespaced two-site lab: the DR site's `vmdr serve` watches the source through
 * the source site's endpoint (policy automatic, every 1 s, missed 3). The source site lost outright
 * (its namespace killed: its libvirtd and its vmdr with it) → the DR site fails over by itself,
 * recording that the source could not be fenced (fenced: false); the site back, its daemon fences
 * the source at its first answer, and a `virsh start` of it there is refused by the hook.
 */
import assert from 'node:assert/strict';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { destroyLabVm, type LabVm } from '../helpers/lab.js';
import { eventually } from '../helpers/receiver-lab.js';
import { protectAcrossSites, undoTwoSiteTest, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';
import { waitForWatchLine, watchLines } from '../helpers/watch-lines.js';

describe('the watch on two sites: the source site lost (qemu:///system in namespaces)', function () {
  this.timeout(600_000);
  let lab: TwoSites;
  let vm: LabVm;
  let dr: HypervisorAdapter;
  let configs: TwoSiteConfigs;
  let drServe: ServeProcess | undefined;
  let sourceServe: ServeProcess | undefined;
  const drNetwork = `test-wdn-${process.pid.toString(36)}`;
  const target = () => `${vm.name}-dr`;
  const onDr = (...args: string[]) => lab.dr.vmdr(args, { config: configs.dr });
  const onSource = (...args: string[]) => lab.source.vmdr(args, { config: configs.source });

  before(async () => {
    ({ lab, vm, dr, configs } = await protectAcrossSites('tsw', { drNetwork, settings: ['watch: { policy: automatic, interval: 1s, missed: 3 }'] }));
    drServe = await lab.dr.serve(configs.dr);
    sourceServe = await lab.source.serve(configs.source, { args: ['--no-replicate'] });
    const provision = await onDr('target', 'provision');
    assert.equal(provision.code, 0, provision.stderr);
    const sync = await onSource('sync', vm.name);
    assert.equal(sync.code, 0, sync.stderr);
  });

  after(async () => {
    await Promise.allSettled([drServe?.stop(), sourceServe?.stop()]);
    await undoTwoSiteTest({ lab, vm, dr, target, network: drNetwork });
    await destroyLabVm(vm);
  });

  it('fails over by itself with fenced: false; the site back, the source is fenced at its first answer and `virsh start` refused', async () => {
    await waitForWatchLine(drServe!, 0, 'healthy', 20_000);
    const from = drServe!.events.length;
    await sourceServe!.stop();
    sourceServe = undefined;
    await lab.source.kill();

    const down = await waitForWatchLine(drServe!, from, 'down', 10_000);
    assert.match(down.detail!, /; site: .*; failing over \S+ automatically$/);
    const done = await waitForWatchLine(drServe!, from, 'failed-over', 300_000);
    assert.match(done.detail!, /^automatic failover fo-\S+ succeeded/);
    const lines = watchLines(drServe!, from);
    assert.deepEqual(lines.map((e) => e.state), ['suspect', 'down', 'failing-over', 'failing-over', 'failed-over'], JSON.stringify(lines));
    assert.match(lines[3]!.detail!, /^source could not be fenced \(fenced: false\): source site "source" did not answer; its site fences it at its first answer$/);
    const run = /^automatic failover (fo-\S+) started$/.exec(lines[2]!.detail!)![1]!;
    assert.equal((await dr.getVm(target())).powerState, 'running');

    // The site back: its daemon asks the DR site first and fences the source at that first answer.
    await lab.source.up();
    vm.adapter = openAdapter(lab.source.uri);
    await vm.adapter.connect();
    sourceServe = await lab.source.serve(configs.source, { args: [] });
    await eventually(async () => assert.ok(sourceServe!.events.some((e) => e.event === 'source-fenced'), `no fence: ${JSON.stringify(sourceServe!.events)}`), 60_000);
    assert.equal((await vm.adapter.getVm(vm.name)).labels.role, 'fenced');
    const start = await lab.source.exec('virsh', ['start', vm.name]);
    assert.notEqual(start.code, 0);
    assert.ok(
      start.stderr.includes(`vmdr: VM ${vm.name} is the fenced source of protection ${vm.name}, failed over to its DR site (${run}); start it with "vmdr failback ${vm.name}"`),
      `virsh said: ${start.stderr}`,
    );
  });
});
