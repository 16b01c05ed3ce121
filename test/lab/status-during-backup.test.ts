/**
 * A status read must never crash the source VM. Under `npm run bench:api` QEMU 7.2 aborted a
 * running source twice with "qcow2_get_specific_info: Assertion `false' failed": status read the
 * VM's disk sizes (virDomainGetBlockInfo, so QMP query-named-block-nodes) while a sync's backup
 * was beginning, and QEMU described the scratch qcow2 that blockdev-create had half opened.
 *
 * Here: backup cycles of a running lab guest back to back, as a sync runs them (begin with a
 * checkpoint, end, delete the older checkpoint), while two loops read as fast as they can:
 *   - the VM as `vmdr status` reads it (getVm over a connection of its own). Before the fix this
 *     killed the guest in 4 runs of 4 (during cycles 12, 21 and 24; one run took libvirtd down
 *     too); now no read reaches QEMU for a running VM's sizes;
 *   - libvirt's own virDomainGetBlockInfo, which `virsh domblkinfo` and monitoring agents
 *     (domstats) ask whatever vmdr does: this killed the guest (cycles 12 and 33, 2 runs of 2)
 *     before vmdr made the scratch images itself (scratch-images.ts); now no backup begin leaves
 *     a node half open.
 * Then the fallback for an image this host cannot read: libvirt is asked while the VM has no job,
 * and not while a backup runs.
 */
import assert from 'node:assert/strict';
import { readFile, rename } from 'node:fs/promises';
import { openAdapter } from '../../hypervisors/index.js';
import { LibvirtConnection } from '../../hypervisors/libvirt/connection.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { freePort } from '../helpers/nbd-servers.js';
import { bootLabVm, createLabVm, destroyLabVm, type LabVm } from '../helpers/lab.js';

const CYCLES = Number(process.env.STATUS_CRASH_CYCLES ?? 40);
const MiB = 1024 * 1024;

describe('status reads during backup cycles (qemu:///system)', function () {
  this.timeout(300_000);
  let vm: LabVm;
  let reader: HypervisorAdapter;

  before(async () => {
    vm = await createLabVm('status-crash', { marker: 'status-crash', diskSize: '64M' });
    await bootLabVm(vm);
    reader = openAdapter('qemu:///system');
    await reader.connect();
  });

  after(async () => {
    await reader?.close();
    await destroyLabVm(vm);
  });

  /** CYCLES backup cycles as a sync runs them, while two loops call `read` as fast as they can. */
  async function cyclesWithReads(read: () => Promise<void>) {
    const tracker = vm.adapter.changeTracker!;
    const figures = { cycles: 0, reads: 0, readsDuringBegin: 0, readErrors: [] as string[], cycleError: undefined as unknown };
    let beginning = false;
    let stop = false;
    const readLoop = async () => {
      while (!stop) {
        const duringBegin = beginning;
        try {
          await read();
          figures.reads++;
          if (duringBegin) figures.readsDuringBegin++;
        } catch (err) {
          figures.readErrors.push((err as Error).message);
          if (figures.readErrors.length > 3) stop = true;
        }
      }
    };
    const readers = [readLoop(), readLoop()];
    try {
      let previous: string | undefined;
      for (; figures.cycles < CYCLES && !stop; figures.cycles++) {
        const checkpoint = `vmdr-status-crash-${figures.cycles}`;
        beginning = true;
        const session = await tracker.beginBackup(vm.name, { checkpoint, ...(previous ? { since: previous } : {}), listen: { transport: 'tcp', host: '127.0.0.1', port: await freePort() } }).finally(() => {
          beginning = false;
        });
        await session.end();
        if (previous) await tracker.deleteCheckpoint(vm.name, previous);
        previous = checkpoint;
      }
      if (previous) await tracker.deleteCheckpoint(vm.name, previous);
    } catch (err) {
      figures.cycleError = err;
    } finally {
      stop = true;
      await Promise.all(readers);
    }
    const qemuLog = await readFile(`/var/log/libvirt/qemu/${vm.name}.log`, 'utf8').catch(() => '');
    assert.equal(await vm.adapter.powerState(vm.name), 'running', `the source VM stopped after ${figures.cycles} cycles: ${qemuLog.split('\n').slice(-3).join(' | ')}`);
    assert.doesNotMatch(qemuLog, /Assertion|shutting down, reason=crashed/);
    assert.equal(figures.cycleError, undefined);
    assert.equal(figures.cycles, CYCLES);
    assert.deepEqual(figures.readErrors, []);
    assert.ok(figures.readsDuringBegin >= CYCLES, `reads overlapped backup begins (${figures.readsDuringBegin} of ${figures.reads})`);
    console.log(`      ${figures.cycles} cycles, ${figures.reads} reads (${figures.readsDuringBegin} while a backup began)`);
  }

  it(`keeps the source VM running through ${CYCLES} backup cycles with status reads in a tight loop`, async () => {
    const wrongSizes: unknown[] = [];
    await cyclesWithReads(async () => {
      const size = (await reader.getVm(vm.name)).disks.find((d) => d.target === 'vda')?.capacityBytes;
      if (size !== 64 * MiB) wrongSizes.push(size);
    });
    assert.deepEqual(wrongSizes, [], 'every read gives the disk its size');
  });

  it(`keeps it running through ${CYCLES} cycles while libvirt's own block info is read (what \`virsh domblkinfo\` and monitoring agents ask)`, async () => {
    const libvirt = new LibvirtConnection('qemu:///system');
    try {
      await cyclesWithReads(async () => {
        await libvirt.call({ operation: 'read disk sizes', vm: vm.name }, 'diskCapacities', vm.name, ['vda']);
      });
    } finally {
      await libvirt.close();
    }
  });

  it('asks libvirt for the size of an image it cannot read only while no backup runs', async () => {
    // QEMU keeps the image open under its new name; this host no longer finds it under the old one.
    const moved = `${vm.disk}.moved`;
    await rename(vm.disk, moved);
    try {
      const sizeOf = async () => (await reader.getVm(vm.name)).disks.find((d) => d.target === 'vda')?.capacityBytes;
      assert.equal(await sizeOf(), 64 * MiB, 'no job: libvirt answers');
      const session = await vm.adapter.changeTracker!.beginBackup(vm.name, { checkpoint: 'vmdr-status-crash-moved', listen: { transport: 'tcp', host: '127.0.0.1', port: await freePort() } });
      try {
        assert.equal(await sizeOf(), undefined, 'a backup runs: the size is left out');
      } finally {
        await session.end();
      }
      assert.equal(await vm.adapter.powerState(vm.name), 'running');
    } finally {
      await rename(moved, vm.disk);
    }
  });
});
