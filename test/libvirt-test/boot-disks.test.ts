/**
 * Boot disks from a recovery point, through the libvirt adapter on the test driver: the adapter
 * makes real qcow2 overlays with qemu-img whatever the driver, so these are real files on a real
 * two-disk chain (base, then a point), read back with qemu-img and qemu-io.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter, PointDisk } from '../../hypervisors/types.js';
import { rejectsWith } from '../helpers/assertions.js';

const exec = promisify(execFile);
const URI = 'test:///default';
const MiB = 2 ** 20;

const sha256 = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');
/** qemu-io checks that `length` bytes at `offset` of `image` all hold `byte`; it exits 1 when not. */
const holds = (image: string, offset: number, length: number, byte: number) =>
  exec('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P ${byte} ${offset} ${length}`, image]).then(
    () => true,
    () => false,
  );
const write = (image: string, offset: number, length: number, byte: number) => exec('qemu-io', ['-f', 'qcow2', '-c', `write -P ${byte} ${offset} ${length}`, image]);
const info = async (image: string) =>
  JSON.parse((await exec('qemu-img', ['info', '--output=json', '-U', image])).stdout) as { format: string; 'virtual-size': number; 'backing-filename'?: string };

describe('boot disks on a recovery point (libvirt adapter, test driver)', () => {
  let adapter: HypervisorAdapter;
  let dir: string;
  let disks: PointDisk[];
  const vms: string[] = [];

  /** What the replica holds, file by file: nothing a boot does may change one byte of it. */
  const replicaFiles = async () => {
    const files: Record<string, string> = {};
    for (const d of ['vda', 'vdb']) for (const f of await readdir(join(dir, d))) files[`${d}/${f}`] = await sha256(join(dir, d, f));
    return files;
  };

  const defineVm = async () => {
    const name = `test-boot-${randomBytes(3).toString('hex')}`;
    vms.push(name);
    await adapter.defineVm({
      name,
      memoryMiB: 128,
      vcpus: 1,
      boot: { kind: 'disk' },
      disks: ['vda', 'vdb'].map((d) => ({ path: join(dir, d, 'base.qcow2'), format: 'qcow2' as const, target: d })),
      nics: [{ network: 'default' }],
    });
    return name;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-boot-disks-'));
    // Each disk a chain as the replica keeps it: base, and a point on it by bare backing name.
    // vdb's point is larger than its base: the disk grew at that point.
    for (const [d, size] of [['vda', 4 * MiB], ['vdb', 2 * MiB]] as const) {
      await mkdir(join(dir, d));
      await exec('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', String(MiB)], { cwd: join(dir, d) });
      await write(join(dir, d, 'base.qcow2'), 0, 65536, 0x5a);
      await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'point-1.qcow2', String(size)], { cwd: join(dir, d) });
      await write(join(dir, d, 'point-1.qcow2'), 65536, 65536, 0x33);
    }
    disks = [
      { target: 'vda', image: join(dir, 'vda', 'point-1.qcow2'), sizeBytes: 4 * MiB },
      { target: 'vdb', image: join(dir, 'vdb', 'point-1.qcow2'), sizeBytes: 2 * MiB },
    ];
    adapter = openAdapter(URI);
    await adapter.connect();
  });

  after(async () => {
    for (const vm of vms) {
      await adapter.stop(vm, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(vm).catch(() => undefined);
    }
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('makes an overlay per disk on the point’s image, by bare name, and points the VM at it; the point is not written', async () => {
    const vm = await defineVm();
    const before = await replicaFiles();
    const boot = await adapter.prepareBootDisks({ vm, boot: 'failover-fo-test1', disks });
    assert.deepEqual(boot, [
      { target: 'vda', path: join(dir, 'vda', 'failover-fo-test1.qcow2'), format: 'qcow2' },
      { target: 'vdb', path: join(dir, 'vdb', 'failover-fo-test1.qcow2'), format: 'qcow2' },
    ]);
    for (const [i, d] of boot.entries()) {
      const overlay = await info(d.path);
      assert.equal(overlay.format, 'qcow2');
      assert.equal(overlay['backing-filename'], 'point-1.qcow2', 'a bare name, resolved beside the overlay');
      assert.equal(overlay['virtual-size'], disks[i]!.sizeBytes);
      // The guest sees the point: the base's data and the point's own.
      assert.ok(await holds(d.path, 0, 65536, 0x5a));
      assert.ok(await holds(d.path, 65536, 65536, 0x33));
    }
    assert.deepEqual(
      (await adapter.getVm(vm)).disks.map((d) => [d.target, d.path, d.format]),
      boot.map((d) => [d.target, d.path, 'qcow2']),
    );

    // The guest writes; a resumed step prepares again and keeps what it wrote. With labels, the
    // same change of the definition promotes the VM (a failover's one redefinition).
    await write(boot[0]!.path, 0, 65536, 0x77);
    assert.deepEqual(await adapter.prepareBootDisks({ vm, boot: 'failover-fo-test1', disks, labels: { role: 'promoted', failover: 'fo-test1' } }), boot);
    assert.deepEqual((await adapter.getVm(vm)).labels, { role: 'promoted', failover: 'fo-test1' });
    assert.ok(await holds(boot[0]!.path, 0, 65536, 0x77), 'the existing overlay was kept');

    const after = await replicaFiles();
    for (const [file, hash] of Object.entries(before)) assert.equal(after[file], hash, `${file} changed`);
  });

  it('release removes exactly what was prepared for that boot, and is safe to repeat', async () => {
    const before = await replicaFiles();
    await adapter.prepareBootDisks({ boot: 'drill-fo-test2', disks });
    await adapter.prepareBootDisks({ boot: 'drill-fo-test3', disks });
    await adapter.releaseBootDisks({ boot: 'drill-fo-test2', disks });
    const after = await replicaFiles();
    assert.deepEqual(Object.keys(after).sort(), [...Object.keys(before), 'vda/drill-fo-test3.qcow2', 'vdb/drill-fo-test3.qcow2'].sort());
    for (const [file, hash] of Object.entries(before)) assert.equal(after[file], hash, `${file} changed`);
    await adapter.releaseBootDisks({ boot: 'drill-fo-test2', disks });
    await adapter.releaseBootDisks({ boot: 'drill-fo-test3', disks });
    assert.deepEqual(Object.keys(await replicaFiles()).sort(), Object.keys(before).sort());
  });

  it('refuses a running VM, a boot name that is not a file name, and one naming a replica file, changing nothing', async () => {
    const before = await replicaFiles();
    const vm = await defineVm();
    await adapter.start(vm);
    await rejectsWith(adapter.prepareBootDisks({ vm, boot: 'failover-fo-test4', disks }), 'INVALID_POWER_STATE');
    await adapter.stop(vm, { mode: 'force' });
    for (const boot of ['../escape', 'a/b', '', '.hidden', 'x'.repeat(129)]) {
      await rejectsWith(adapter.prepareBootDisks({ boot, disks }), 'BOOT_NAME_INVALID');
      await rejectsWith(adapter.releaseBootDisks({ boot, disks }), 'BOOT_NAME_INVALID');
    }
    // A boot named like a replica file would have the VM write into the replica: refused too.
    for (const boot of ['point-1', 'base']) {
      const err = await rejectsWith(adapter.prepareBootDisks({ vm, boot, disks }), 'IMAGE_OPERATION_FAILED');
      assert.match(err.message, /is not an overlay of point-1\.qcow2/);
      const release = await rejectsWith(adapter.releaseBootDisks({ boot, disks }), 'IMAGE_OPERATION_FAILED');
      assert.match(release.message, /^remove boot overlay \S+: it exists and is not an overlay of point-1\.qcow2/);
    }
    assert.deepEqual(await replicaFiles(), before);
    assert.deepEqual((await adapter.getVm(vm)).disks.map((d) => d.path), [join(dir, 'vda', 'base.qcow2'), join(dir, 'vdb', 'base.qcow2')]);
  });

  it('refuses a remote libvirt URI before it connects: the files would be written on the wrong host', async () => {
    const remote = openAdapter('qemu+ssh://dr.example.invalid/system');
    const err = await rejectsWith(remote.prepareBootDisks({ boot: 'failover-fo-test6', disks }), 'UNSUPPORTED');
    assert.match(err.message, /^preparing boot disks through a remote libvirt URI .* is not supported on qemu\+ssh:\/\/dr\.example\.invalid\/system$/);
    await rejectsWith(remote.releaseBootDisks({ boot: 'failover-fo-test6', disks }), 'UNSUPPORTED');
    await rejectsWith(remote.applyGuestIdentity('test-x', { instanceId: 'x', hostname: 'x', nics: [] }), 'UNSUPPORTED');
    await rejectsWith(remote.removeGuestIdentity('test-x'), 'UNSUPPORTED');
  });

  it('says which image it could not put an overlay on', async () => {
    const missing = { target: 'vda', image: join(dir, 'vda', 'point-9.qcow2'), sizeBytes: MiB };
    const err = await rejectsWith(adapter.prepareBootDisks({ boot: 'failover-fo-test5', disks: [missing] }), 'IMAGE_OPERATION_FAILED');
    assert.equal(err.subject.file, missing.image);
    assert.match(err.message, /^create a boot overlay on \S+point-9\.qcow2: .*backing/);
    assert.ok(!(await readdir(join(dir, 'vda'))).some((f) => f.startsWith('failover-fo-test5')), 'no overlay, whole or part, was left');
  });
});
