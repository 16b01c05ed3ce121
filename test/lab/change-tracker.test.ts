import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { BackupSession, ChangeTracker } from '../../hypervisors/types.js';
import { rejectsWith } from '../helpers/assertions.js';
import { freePort } from '../helpers/nbd-servers.js';
import { createLabVm, destroyLabVm, GUEST_READY, waitForSerialLine, type LabVm } from '../helpers/lab.js';

const exec = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;


/** nbdinfo --map: [offset, length, type] rows of one meta context. */
async function map(port: number, exportName: string, context: string): Promise<{ offset: number; length: number; type: number }[]> {
  const { stdout } = await exec('nbdinfo', ['--json', `--map=${context}`, `nbd://127.0.0.1:${port}/${exportName}`]);
  return (JSON.parse(stdout) as { offset: number; length: number; type: number }[]).map(({ offset, length, type }) => ({ offset, length, type }));
}

describe('changed-block tracking through libvirt checkpoints (qemu:///system)', function () {
  this.timeout(120_000);
  let vm: LabVm;
  let name: string;
  let tracker: ChangeTracker;
  let session: BackupSession | undefined;

  before(async () => {
    vm = await createLabVm('cbt', { marker: 'cbt', diskSize: '16M' });
    name = vm.name;
    assert.ok(vm.adapter.changeTracker, 'qemu:///system must offer change tracking');
    tracker = vm.adapter.changeTracker;
    await vm.adapter.start(name);
    await waitForSerialLine({ vm: name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000 });
  });

  afterEach(async () => {
    await session?.end();
    session = undefined;
  });

  after(() => destroyLabVm(vm));

  it('exports the whole disk at a first checkpoint, then exactly the blocks written since', async () => {
    const port = await freePort();
    session = await tracker.beginBackup(name, { checkpoint: 'vmdr-1', listen: { transport: 'tcp', host: '127.0.0.1', port } });
    assert.deepEqual(session.exports.map((e) => e.disk), ['vda']);
    assert.equal(session.exports[0]!.dirtyContext, undefined, 'a full backup has no dirty bitmap');
    const { stdout: size } = await exec('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/${session.exports[0]!.exportName}`]);
    assert.equal(Number(size), 16 * MiB);
    await session.end();

    // Written through QEMU's block layer, so the dirty bitmap sees it; the last 64 KiB too.
    const write = (pattern: string, offset: number) =>
      exec('virsh', ['-c', 'qemu:///system', 'qemu-monitor-command', name, '--hmp',
        `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P ${pattern} ${offset} 64k"`]);
    await write('0xcd', 3 * MiB);
    await write('0xab', 16 * MiB - 64 * KiB);

    const port2 = await freePort();
    session = await tracker.beginBackup(name, { checkpoint: 'vmdr-2', since: 'vmdr-1', listen: { transport: 'tcp', host: '127.0.0.1', port: port2 } });
    const vda = session.exports[0]!;
    assert.match(vda.dirtyContext ?? '', /^qemu:dirty-bitmap:/);
    const dirty = (await map(port2, vda.exportName, vda.dirtyContext!)).filter((e) => e.type & 1);
    assert.deepEqual(dirty, [
      { offset: 3 * MiB, length: 64 * KiB, type: 1 },
      { offset: 16 * MiB - 64 * KiB, length: 64 * KiB, type: 1 },
    ]);
    // The export holds the data as it was at the checkpoint.
    const { stdout: bytes } = await exec('nbdcopy', ['--', `nbd://127.0.0.1:${port2}/${vda.exportName}`, '-'], { encoding: 'buffer', maxBuffer: 32 * MiB });
    assert.ok((bytes as Buffer).subarray(3 * MiB, 3 * MiB + 64 * KiB).equals(Buffer.alloc(64 * KiB, 0xcd)));
    assert.ok((bytes as Buffer).subarray(16 * MiB - 64 * KiB).equals(Buffer.alloc(64 * KiB, 0xab)));
  });

  it('keeps the checkpoint chain and deletes only checkpoints vmdr named', async () => {
    assert.deepEqual(await tracker.checkpointNames(name), ['vmdr-1', 'vmdr-2']);
    const chain = await tracker.listCheckpoints(name);
    assert.deepEqual(chain.map((c) => [c.name, c.parent ?? null, c.disks]), [
      ['vmdr-1', null, ['vda']],
      ['vmdr-2', 'vmdr-1', ['vda']],
    ]);
    assert.ok(Math.abs(chain[1]!.createdAt.getTime() - Date.now()) < 120_000);
    await tracker.deleteCheckpoint(name, 'vmdr-1');
    assert.deepEqual((await tracker.listCheckpoints(name)).map((c) => c.name), ['vmdr-2']);
    await rejectsWith(tracker.deleteCheckpoint(name, 'nightly-backup'), 'NOT_MANAGED_BY_VMDR');
  });
});
