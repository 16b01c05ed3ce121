import assert from 'node:assert/strict';
import type { BackupSession, ChangeTracker } from '../../hypervisors/types.js';
import { NbdClient, STATE_DIRTY } from '../../plugin/replication/nbd/client.js';
import { createLabVm, destroyLabVm, GUEST_READY, waitForSerialLine, type LabVm } from '../helpers/lab.js';
import { exec, freePort, nbdinfoMap, nbdUri } from '../helpers/nbd-servers.js';

const KiB = 1024;
const MiB = 1024 * KiB;


describe("NBD client against QEMU's own export (libvirt pull backup of a running lab VM)", function () {
  this.timeout(120_000);
  let vm: LabVm | undefined;
  let tracker: ChangeTracker;
  let session: BackupSession | undefined;
  let client: NbdClient | undefined;

  before(async () => {
    vm = await createLabVm('nbd', { marker: 'nbd', diskSize: '16M' });
    assert.ok(vm.adapter.changeTracker, 'qemu:///system must offer change tracking');
    tracker = vm.adapter.changeTracker;
    await vm.adapter.start(vm.name);
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000 });

    const first = await tracker.beginBackup(vm.name, { checkpoint: 'vmdr-1', listen: { transport: 'tcp', host: '127.0.0.1', port: await freePort() } });
    await first.end();
    // Written through QEMU's block layer, so the dirty bitmap sees them.
    for (const [pattern, offset] of [['0xcd', 3 * MiB], ['0xab', 16 * MiB - 64 * KiB]] as const) {
      await exec('virsh', ['-c', 'qemu:///system', 'qemu-monitor-command', vm.name, '--hmp',
        `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P ${pattern} ${offset} 64k"`]);
    }
    session = await tracker.beginBackup(vm.name, {
      checkpoint: 'vmdr-2',
      since: 'vmdr-1',
      listen: { transport: 'tcp', host: '127.0.0.1', port: await freePort() },
    });
  });

  after(async () => {
    client?.destroy();
    await session?.end();
    await destroyLabVm(vm);
  });

  it('negotiates the dirty bitmap and base:allocation on one connection and matches nbdinfo', async () => {
    const vda = session!.exports[0]!;
    const dirtyContext = vda.dirtyContext!;
    assert.match(dirtyContext, /^qemu:dirty-bitmap:/);
    client = await NbdClient.connect(session!.listen, { exportName: vda.exportName, metaContexts: ['base:allocation', dirtyContext] });
    assert.equal(client.size, 16 * MiB);
    assert.ok(client.hasMetaContext('base:allocation') && client.hasMetaContext(dirtyContext));

    const uri = nbdUri(session!.listen, vda.exportName);
    const dirty = await client.extents(dirtyContext);
    assert.deepEqual(dirty, await nbdinfoMap(uri, dirtyContext));
    assert.deepEqual(dirty.filter((e) => e.flags & STATE_DIRTY), [
      { offset: 3 * MiB, length: 64 * KiB, flags: STATE_DIRTY },
      { offset: 16 * MiB - 64 * KiB, length: 64 * KiB, flags: STATE_DIRTY },
    ]);
    const allocation = await client.extents('base:allocation');
    assert.deepEqual(allocation, await nbdinfoMap(uri, 'base:allocation'));
    assert.equal(allocation.reduce((sum, e) => sum + e.length, 0), 16 * MiB);
  });

  it('reads the dirty extents: the patterns written since the last checkpoint', async () => {
    const dirty = (await client!.extents(session!.exports[0]!.dirtyContext!)).filter((e) => e.flags & STATE_DIRTY);
    const [first, second] = await Promise.all(dirty.map((e) => client!.read(e.offset, e.length)));
    assert.ok(first!.equals(Buffer.alloc(64 * KiB, 0xcd)));
    assert.ok(second!.equals(Buffer.alloc(64 * KiB, 0xab)));
    await client!.close();
  });
});
