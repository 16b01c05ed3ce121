/**
 * Fencing a source VM against libvirt's test driver (test:///default): what the fence writes on a
 * VM that already carries vmdr's labels, and that lifting it gives them back. The hook, the
 * autostart and the daemon's loop are on the real lab (test/lab/fence.test.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { fenceOf, fenceSource, unfenceSource } from '../../plugin/sites/fence.js';

describe('fencing a source VM (test:///default)', () => {
  let adapter: HypervisorAdapter;
  const vm = `test-fence-${randomBytes(3).toString('hex')}`;
  const own = { role: 'lab-production', tenant: 'acme' };

  before(async () => {
    adapter = openAdapter('test:///default');
    await adapter.connect();
    await adapter.defineVm({
      name: vm,
      memoryMiB: 128,
      vcpus: 1,
      boot: { kind: 'disk' },
      disks: [{ path: `/var/lib/vmdr/${vm}.qcow2`, format: 'qcow2' }],
      nics: [],
      labels: own,
    });
    await adapter.start(vm);
  });

  after(async () => {
    await adapter.stop(vm, { mode: 'force' }).catch(() => undefined);
    await adapter.undefine(vm).catch(() => undefined);
    await adapter.close();
  });

  it('marks the VM over its own labels, keeps the first fence on a second one, and gives its labels back', async () => {
    const first = await fenceSource(adapter, vm, { protection: 'acme-web', failover: 'fo-1' });
    assert.equal(first.was, 'running');
    const info = await adapter.getVm(vm);
    assert.equal(info.powerState, 'shutoff');
    assert.equal(info.autostart, false);
    assert.deepEqual(fenceOf(info), { protection: 'acme-web', failover: 'fo-1', fencedAt: first.fencedAt, autostart: false, before: own });
    assert.equal(info.labels.tenant, 'acme');

    const second = await fenceSource(adapter, vm, { protection: 'acme-web', failover: 'fo-2' });
    assert.deepEqual(second, { fencedAt: first.fencedAt, was: 'shutoff', already: false });
    assert.equal(fenceOf(await adapter.getVm(vm))?.failover, 'fo-2');

    const lifted = await unfenceSource(adapter, vm);
    assert.equal(lifted?.failover, 'fo-2');
    assert.deepEqual((await adapter.getVm(vm)).labels, own);
    assert.equal(await unfenceSource(adapter, vm), undefined);
  });
});
