/**
 * The watch told through the source site's endpoint, on the namespaced two-site lab: the DR site's
 * `vmdr serve` holds the source site's notices (POST /v1/source-site/notices) beside its beats
 * (policy notify, every 10 s). The source VM destroyed on its site → the DR site records it
 * suspect as the source site's libvirt tells it, seconds before its next beat.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { destroyLabVm, type LabVm } from '../helpers/lab.js';
import { protectAcrossSites, undoTwoSiteTest, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';
import { waitForWatchLine } from '../helpers/watch-lines.js';

describe('the watch told through the source site\'s endpoint (qemu:///system in namespaces)', function () {
  this.timeout(300_000);
  let lab: TwoSites;
  let vm: LabVm;
  let dr: HypervisorAdapter;
  let configs: TwoSiteConfigs;
  let drServe: ServeProcess | undefined;
  let sourceServe: ServeProcess | undefined;
  const drNetwork = `test-wnn-${process.pid.toString(36)}`;

  before(async () => {
    ({ lab, vm, dr, configs } = await protectAcrossSites('tsn', { drNetwork, settings: ['watch: { policy: notify, interval: 10s, missed: 3 }'] }));
    sourceServe = await lab.source.serve(configs.source, { args: ['--no-replicate'] });
    drServe = await lab.dr.serve(configs.dr);
  });

  after(async () => {
    await Promise.allSettled([drServe?.stop(), sourceServe?.stop()]);
    await undoTwoSiteTest({ lab, vm, dr, target: () => `${vm.name}-dr`, network: drNetwork });
    await destroyLabVm(vm);
  });

  it('a source VM destroyed on its site is suspect on the DR site at libvirt\'s event, before the next beat', async () => {
    const healthy = await waitForWatchLine(drServe!, 0, 'healthy', 30_000);
    // The notices are asked with the first beat: let the held answer reach the source site.
    await sleep(1000);
    const from = drServe!.events.length;
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const offAt = Date.now();
    const suspect = await waitForWatchLine(drServe!, from, 'suspect', 5000);
    assert.equal(suspect.detail, `vm: source VM ${vm.name} is shutoff (destroyed), told by its hypervisor`);
    const afterOff = Date.parse(suspect.at) - offAt;
    const beforeNextBeat = Date.parse(healthy.at) + 10_000 - Date.parse(suspect.at);
    console.log(`      suspect ${afterOff} ms after the destroy returned, ${beforeNextBeat} ms before the next beat`);
    assert.ok(afterOff < 1000, `suspect ${afterOff} ms after the VM was off`);
    assert.ok(beforeNextBeat > 0);
  });
});
