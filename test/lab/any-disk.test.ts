/**
 * Any disk format on the real lab: a running VM whose data disks are a raw file and a block device
 * (a loop device; an LVM volume where the kernel has device-mapper), tracked by QEMU's transient
 * dirty bitmaps; a restart that drops them; a raw disk grown while protected; a disk hot-added to
 * the protected VM. Every check reads bytes: patterns written through QEMU's block layer read
 * back from the recovery point's images, and whole-disk compares with the guest paused.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { bootLabVm, createLabVm, fileSize, GUEST_READY, vmdrJson, waitForSerialLine, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { assertPattern, compareImages, hmpFlush, hmpWrite, paused } from '../helpers/patterns.js';
import { destroyProtectedLabVm, labProtection } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;

interface Point {
  id: string;
  kind: string;
  dataBytes: number;
  disks: { disk: string; image: string; sizeBytes: number }[];
}
interface SyncJson {
  kind: string;
  checkpoint: string;
  reason: string;
  bytesCovered: number;
  bytesShipped: number;
  durationMs: number;
  point: Point;
}

const virsh = (...args: string[]) => exec('virsh', ['-c', 'qemu:///system', ...args]);

/** The `virtio-diskN` number of the VM's disk `target`, as hmpWrite takes it. */
async function diskNumber(vm: string, target: string): Promise<number> {
  const { stdout } = await virsh('dumpxml', vm);
  const disk = stdout.split('<disk ').find((d) => d.includes(`<target dev='${target}'`));
  const alias = /<alias name='virtio-disk(\d+)'\/>/.exec(disk ?? '');
  assert.ok(alias, `no virtio alias for ${target} of ${vm}`);
  return Number(alias[1]);
}

/** The dirty bitmaps QEMU keeps on the raw disks' block nodes (the raw format nodes), by name. */
async function rawBitmaps(vm: string): Promise<string[]> {
  const { stdout } = await virsh('qemu-monitor-command', vm, JSON.stringify({ execute: 'query-named-block-nodes', arguments: { flat: true } }));
  const nodes = (JSON.parse(stdout) as { return: { drv: string; 'dirty-bitmaps'?: { name: string }[] }[] }).return;
  return nodes.filter((n) => n.drv === 'raw').flatMap((n) => (n['dirty-bitmaps'] ?? []).map((b) => b.name)).sort();
}

/** Why an LVM volume cannot be made here, or undefined when it can. */
async function lvmUnavailable(): Promise<string | undefined> {
  const misc = await readFile('/proc/misc', 'utf8').catch(() => '');
  if (!/\bdevice-mapper\b/.test(misc)) return `this kernel (${(await exec('uname', ['-r'])).stdout.trim()}) has no device-mapper (not in /proc/misc, no dm_mod module): LVM volumes cannot exist on this machine; the loop-device test covers a raw block device`;
  if (!(await access('/usr/sbin/lvcreate').then(() => true, () => false))) return 'lvm2 is not installed (scripts/lab/packages.txt lists it)';
  return undefined;
}

describe('any disk format: raw files, block devices, a disk added (qemu:///system)', function () {
  this.timeout(240_000);
  let vm: LabVm;
  let drNetwork: string;
  let config: string;
  let serve: ServeProcess | undefined;
  let loop: string | undefined;
  const raw = () => join(vm.dir, 'vdb.raw');
  /** Each source disk by target, as the replica's points must hold it. */
  const sources: Record<string, string> = {};

  before(async () => {
    vm = await createLabVm('anydisk', { marker: 'anydisk-src', diskSize: '32M' });
    drNetwork = `test-dr-${vm.name.slice(-6)}`;
    await vm.adapter.ensureIsolatedNetwork({ name: drNetwork });
    // vdb: a sparse raw file; vdc: a loop device over another (virsh makes it a type='block' disk).
    await exec('truncate', ['-s', String(16 * MiB), raw()]);
    await exec('truncate', ['-s', String(8 * MiB), join(vm.dir, 'vdc.img')]);
    loop = (await exec('losetup', ['-f', '--show', join(vm.dir, 'vdc.img')])).stdout.trim();
    await virsh('attach-disk', vm.name, raw(), 'vdb', '--driver', 'qemu', '--subdriver', 'raw', '--targetbus', 'virtio', '--config');
    await virsh('attach-disk', vm.name, loop, 'vdc', '--driver', 'qemu', '--subdriver', 'raw', '--targetbus', 'virtio', '--config');
    Object.assign(sources, { vda: vm.disk, vdb: raw(), vdc: loop });
    await bootLabVm(vm);
    config = await writeOneHostConfig(vm, labProtection(vm, { network: drNetwork }));
    serve = await startServe(config);
  });

  after(async () => {
    await serve?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
    if (loop) await exec('losetup', ['-d', loop]).catch(() => undefined);
  });

  const sync = () => vmdrJson<SyncJson>(['sync', vm.name, '--config', config]);
  const image = (p: Point, disk: string) => p.disks.find((d) => d.disk === disk)!.image;
  /** A sync with the guest paused, then every source disk compared with the point's image of it. */
  const frozenSync = (args: string[]) =>
    paused(vm.name, async () => {
      const r = await vmdrJson<SyncJson>([...args, vm.name, '--config', config]);
      for (const [disk, source] of Object.entries(sources)) {
        await hmpFlush(vm.name, await diskNumber(vm.name, disk));
        await compareImages(source, image(r.point, disk));
      }
      return r;
    });

  it('protects a VM whose data disks are a raw file and a block device; incrementals ship only what changed', async () => {
    const first = await frozenSync(['protect']);
    assert.equal(first.kind, 'full');
    assert.deepEqual(first.point.disks.map((d) => [d.disk, d.sizeBytes]), [['vda', 32 * MiB], ['vdb', 16 * MiB], ['vdc', 8 * MiB]]);
    // libvirt's checkpoint names the instant; the raw disks' bitmaps are QEMU's, in memory.
    const { stdout: cp } = await virsh('checkpoint-dumpxml', vm.name, (await virsh('checkpoint-list', vm.name, '--name')).stdout.trim());
    assert.match(cp, /<disk name='vdb' checkpoint='no'\/>/);

    await hmpWrite(vm.name, 1, '0xab', 5 * MiB, 128 * KiB);
    await hmpWrite(vm.name, 2, '0xcd', 7 * MiB, 64 * KiB);
    const r = await frozenSync(['sync']);
    assert.equal(r.kind, 'incremental', r.reason);
    // 192 KiB written; the idle guest adds a few granules of its own on vda, never a whole disk.
    assert.ok(r.bytesCovered >= 192 * KiB && r.bytesCovered <= 192 * KiB + 8 * 64 * KiB, `covered ${r.bytesCovered}`);
    await assertPattern(image(r.point, 'vdb'), '0xab', 5 * MiB, 128 * KiB);
    await assertPattern(image(r.point, 'vdc'), '0xcd', 7 * MiB, 64 * KiB);
    // Acknowledged: each raw disk keeps the new checkpoint's bitmap alone (the old one and the cycle's copy are gone).
    assert.deepEqual(await rawBitmaps(vm.name), [r.checkpoint, r.checkpoint]);
    const idle = [];
    for (let i = 0; i < 3; i += 1) idle.push((await sync()).durationMs);
    console.log(`      incremental of qcow2 + raw file + block device: ${r.durationMs} ms with the writes; idle: ${idle.join(', ')} ms`);
  });

  it('after a VM restart drops the transient bitmaps, the next cycle compares the raw disks by hashes and says why', async () => {
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const from = await fileSize(vm.log);
    await vm.adapter.start(vm.name);
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000, fromOffset: from });
    await hmpWrite(vm.name, 1, '0x5a', 1 * MiB, 64 * KiB);
    const r = await frozenSync(['sync']);
    assert.equal(r.kind, 'resync');
    assert.match(r.reason, /disk vdb is raw and its dirty bitmap of checkpoint \S+, kept in QEMU's memory, is gone \(QEMU restarted since/);
    assert.match(r.reason, /disk vdc is raw/);
    await assertPattern(image(r.point, 'vdb'), '0x5a', 1 * MiB, 64 * KiB);
    // Only what differs travels: the write, and what the guest's boot wrote on vda.
    assert.ok(r.bytesCovered <= 2 * MiB, `covered ${r.bytesCovered}`);
    // The cycle's record says why, as `vmdr status` shows it.
    const [row] = await vmdrJson<{ lastSync: { kind: string; reason: string | null } }[]>(['status', '--config', config]);
    assert.equal(row!.lastSync.kind, 'resync');
    assert.equal(row!.lastSync.reason, r.reason);
    const next = await sync();
    assert.equal(next.kind, 'incremental', next.reason);
  });

  it('a raw disk grown while protected: the next cycle copies the new tail and the replica grows', async () => {
    await virsh('blockresize', vm.name, 'vdb', `${24 * MiB}B`);
    await hmpWrite(vm.name, 1, '0x3c', 20 * MiB, 64 * KiB);
    const r = await frozenSync(['sync']);
    assert.equal(r.kind, 'incremental', r.reason);
    assert.equal(r.point.disks.find((d) => d.disk === 'vdb')!.sizeBytes, 24 * MiB);
    // The 8 MiB tail is covered (mostly as zero ranges), the write in it arrives.
    assert.ok(r.bytesCovered >= 8 * MiB, `covered ${r.bytesCovered}`);
    assert.ok(r.point.dataBytes <= 1 * MiB, `data ${r.point.dataBytes}`);
    await assertPattern(image(r.point, 'vdb'), '0x3c', 20 * MiB, 64 * KiB);
  });

  it('a disk hot-added to the protected VM is copied whole, alone; the other disks stay incremental', async () => {
    const vdd = join(vm.dir, 'vdd.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', vdd, String(16 * MiB)]);
    await exec('chmod', ['644', vdd]);
    await virsh('attach-disk', vm.name, vdd, 'vdd', '--driver', 'qemu', '--subdriver', 'qcow2', '--targetbus', 'virtio', '--persistent');
    const n = await diskNumber(vm.name, 'vdd');
    await hmpWrite(vm.name, n, '0x61', 2 * MiB, 1 * MiB);
    await hmpWrite(vm.name, 0, '0x62', 20 * MiB, 64 * KiB);
    sources.vdd = vdd;
    const r = await frozenSync(['sync']);
    assert.equal(r.kind, 'incremental', r.reason);
    assert.match(r.reason, /disk vdd joined the VM after checkpoint \S+: copied whole/);
    await assertPattern(image(r.point, 'vdd'), '0x61', 2 * MiB, 1 * MiB);
    await assertPattern(image(r.point, 'vda'), '0x62', 20 * MiB, 64 * KiB);
    // Data read: vdd's 1 MiB allocated plus vda's 64 KiB and a few granules of the idle guest;
    // a hash resync of every disk (the old way) reads all 80 MiB of them.
    console.log(`      disk added: ${r.point.dataBytes} bytes of data read, ${r.bytesShipped} shipped, for 80 MiB of disks`);
    assert.ok(r.point.dataBytes >= 1 * MiB + 64 * KiB && r.point.dataBytes <= 1 * MiB + 64 * KiB + 8 * 64 * KiB, `data ${r.point.dataBytes}`);
  });

  it('an LVM logical volume as a source disk', async function () {
    const why = await lvmUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const file = join(vm.dir, 'pv.img');
    await exec('truncate', ['-s', String(64 * MiB), file]);
    const pv = (await exec('losetup', ['-f', '--show', file])).stdout.trim();
    const vg = `vmdrtest${process.pid}`;
    try {
      await exec('pvcreate', ['-q', pv]);
      await exec('vgcreate', ['-q', vg, pv]);
      await exec('lvcreate', ['-q', '-y', '-L', '8M', '-n', 'data', vg]);
      const lv = `/dev/${vg}/data`;
      await virsh('attach-disk', vm.name, lv, 'vde', '--driver', 'qemu', '--subdriver', 'raw', '--targetbus', 'virtio', '--persistent');
      await sync();
      await hmpWrite(vm.name, await diskNumber(vm.name, 'vde'), '0x4d', 3 * MiB, 64 * KiB);
      const r = await sync();
      assert.equal(r.kind, 'incremental', r.reason);
      await assertPattern(image(r.point, 'vde'), '0x4d', 3 * MiB, 64 * KiB);
      await virsh('detach-disk', vm.name, 'vde', '--persistent');
    } finally {
      await exec('vgremove', ['-q', '-f', vg]).catch(() => undefined);
      await exec('losetup', ['-d', pv]).catch(() => undefined);
      await rm(file, { force: true });
    }
  });

  it('a shut-off VM with raw disks: read from its images and compared by hashes (no bitmap survives without QEMU)', async () => {
    await hmpWrite(vm.name, 1, '0x71', 9 * MiB, 64 * KiB);
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const r = await vmdrJson<SyncJson & { offline?: boolean }>(['sync', vm.name, '--config', config]);
    assert.equal(r.offline, true);
    assert.equal(r.kind, 'resync');
    assert.match(r.reason, /VM is shut off/);
    for (const [disk, source] of Object.entries(sources)) await compareImages(source, image(r.point, disk));
    await assertPattern(image(r.point, 'vdb'), '0x71', 9 * MiB, 64 * KiB);
  });
});
