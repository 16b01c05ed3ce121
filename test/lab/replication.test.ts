/**
 * Replication end to end on the real lab: a running two-disk VM on libvirtd, `vmdr serve` as the
 * DR receiver, the built CLI as the operator runs it. Every check reads the replica's bytes: the
 * patterns written through QEMU's block layer (so the dirty bitmap sees them) read back from the
 * recovery point's image with qemu-io, or a whole-disk qemu-img compare against the source.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { assertProgress, type ProgressEvent } from '../helpers/assertions.js';
import { ensureLabGuest, fileSize, GUEST_READY, LAB_CMDLINE, labBoot, labScratchDir, makeDisk, runVmdr, vmdrJson, waitForSerialLine } from '../helpers/lab.js';
import { assertPattern, compareImages, hmpFlush, hmpWrite, paused } from '../helpers/patterns.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const CLI = join(import.meta.dirname, '..', '..', 'dist', 'scripts', 'vmdr.js');
const KiB = 1024;
const MiB = 1024 * KiB;
/** Not a multiple of the 64 KiB bitmap granularity: the last granule is 1.5 KiB long. */
const VDB_SIZE = 20 * MiB + 1536;

interface Point {
  id: string;
  kind: string;
  checkpoint: string;
  since: string | null;
  bytesShipped: number;
  disks: { disk: string; image: string; sizeBytes: number }[];
}
interface SyncJson {
  event: string;
  kind: string;
  reason: string;
  offline?: boolean;
  warnings: string[];
  since: string | null;
  checkpoint: string;
  bytesCovered: number;
  bytesShipped: number;
  point: Point;
}

async function assertNoPattern(image: string, pattern: string, offset: number, length: number): Promise<void> {
  await assert.rejects(assertPattern(image, pattern, offset, length), `${image} should not hold ${pattern} at ${offset}`);
}

/** The persistent bitmaps QEMU left in a qcow2 image, by name: their flags ('in-use': not saved). */
async function bitmaps(image: string): Promise<Map<string, string[]>> {
  const { stdout } = await exec('qemu-img', ['info', '--output=json', '-U', image]);
  const info = JSON.parse(stdout) as { 'format-specific': { data: { bitmaps?: { name: string; flags: string[] }[] } } };
  return new Map((info['format-specific'].data.bitmaps ?? []).map((b) => [b.name, b.flags]));
}

/** Writes a pattern into a shut-off VM's image through QEMU's block layer (its enabled bitmaps see it). */
async function offlineWrite(image: string, pattern: string, offset: number, length: number): Promise<void> {
  const { stdout } = await exec('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} ${offset} ${length}`, image]);
  assert.match(stdout, /wrote/, stdout);
}

describe('replication of running VMs into recovery points (qemu:///system)', function () {
  this.timeout(300_000);
  let adapter: HypervisorAdapter;
  let dir: string;
  let config: string;
  let serve: ServeProcess | undefined;
  const name = `test-repl-${process.pid.toString(36)}`;
  const writer = `${name}-w`;
  const network = `test-net-${process.pid.toString(36)}`;
  const disks = { vda: '', vdb: '', wda: '' };

  before(async () => {
    await ensureLabGuest();
    dir = await labScratchDir('repl');
    adapter = openAdapter('qemu:///system');
    await adapter.connect();
    await adapter.ensureIsolatedNetwork({ name: network });
    disks.vda = join(dir, 'vda.qcow2');
    disks.vdb = join(dir, 'vdb.qcow2');
    disks.wda = join(dir, 'writer-vda.qcow2');
    await makeDisk(disks.vda, 'repl', '64M');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', disks.vdb, String(VDB_SIZE)]);
    await makeDisk(disks.wda, 'writer', '64M');
    const vm = (vmName: string, vmDisks: string[], cmdline?: string) =>
      adapter.defineVm({
        name: vmName,
        memoryMiB: 256,
        vcpus: 1,
        boot: labBoot(cmdline),
        disks: vmDisks.map((path, i) => ({ path, format: 'qcow2' as const, target: `vd${'ab'[i]}` })),
        nics: [{ network }],
        serialLog: join(dir, `${vmName}.log`),
      });
    await vm(name, [disks.vda, disks.vdb]);
    await vm(writer, [disks.wda], `${LAB_CMDLINE} vmdr.mode=writer vmdr.write_kbps=512`);
    await adapter.start(name);
    await adapter.start(writer);
    await waitForSerialLine({ vm: name, file: join(dir, `${name}.log`), pattern: GUEST_READY, timeoutMs: 60_000 });
    await waitForSerialLine({ vm: writer, file: join(dir, `${writer}.log`), pattern: GUEST_READY, timeoutMs: 60_000 });

    const port = await freeLoopbackPort();
    const boot = labBoot();
    const target = (vmName: string) => `
    target:
      site: dr
      vm: ${vmName}-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${network} }]`;
    config = join(dir, 'vmdr.yaml');
    await writeFile(
      config,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: prod, uri: "qemu:///system" }
  - name: dr
    uri: "qemu:///system"
    storage: ${join(dir, 'replicas')}
    receiver: { listen: "127.0.0.1:${port}", credentials: ${join(dir, 'receiver')} }
protections:
  - name: ${name}
    source: { site: prod, vm: ${name} }
    retention: { keep: 20 }${target(name)}
  - name: ${writer}
    source: { site: prod, vm: ${writer} }
    retention: { keep: 3 }${target(writer)}
`,
    );
    serve = await startServe(config);
  });

  after(async () => {
    await serve?.stop();
    for (const vm of [name, writer, `${name}-dr`, `${writer}-dr`]) {
      await adapter.stop(vm, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(vm).catch(() => undefined);
    }
    await adapter.removeNetwork(network).catch(() => undefined);
    await adapter.close();
    await exec('rm', ['-rf', dir]);
  });

  const points = async (vm = name) => vmdrJson<Point[]>(['points', vm, '--config', config]);
  const image = (p: Point, disk: string) => p.disks.find((d) => d.disk === disk)!.image;
  /**
   * Runs a vmdr command that makes a point with the guest paused, then compares each source disk
   * with the point's image of it: the source is then exactly the checkpoint's state.
   */
  const frozenSync = <T extends { point: Point }>(vm: string, args: string[], sources: Record<string, string>) =>
    paused(vm, async () => {
      const result = await vmdrJson<T>([...args, '--config', config]);
      for (const [i, [disk, path]] of Object.entries(sources).entries()) {
        await hmpFlush(vm, i);
        await compareImages(path, image(result.point, disk));
      }
      return result;
    });

  it('protects a running two-disk VM: target pre-staged, first point equals the source', async () => {
    const first = await frozenSync<SyncJson & { action: string }>(name, ['protect', name], { vda: disks.vda, vdb: disks.vdb });
    assert.equal(first.action, 'protected');
    assert.equal(first.kind, 'full');
    assert.equal(first.point.id, 'rp-1');
    assert.deepEqual(first.point.disks.map((d) => [d.disk, d.sizeBytes]), [['vda', 64 * MiB], ['vdb', VDB_SIZE]]);
    // Holes and zero extents travel as zero frames: far fewer bytes than the 84 MiB of disk.
    assert.ok(first.bytesShipped < 16 * MiB, `shipped ${first.bytesShipped}`);
    assert.equal((await adapter.getVm(`${name}-dr`)).powerState, 'shutoff');

    const again = await vmdrJson<{ action: string }>(['protect', name, '--config', config]);
    assert.equal(again.action, 'already-protected');
  });

  it('ships only the blocks written since, including the last partial granule of an odd-sized disk', async () => {
    await hmpWrite(name, 0, '0xcd', 3 * MiB, 64 * KiB);
    await hmpWrite(name, 1, '0xab', VDB_SIZE - 1536, 1536);
    await hmpWrite(name, 1, '0x5a', 0, 4096);
    const r = await frozenSync<SyncJson>(name, ['sync', name], { vda: disks.vda, vdb: disks.vdb });
    assert.equal(r.kind, 'incremental');
    assert.equal(r.point.id, 'rp-2');
    // vda: one 64 KiB granule; vdb: the first granule and the 1.5 KiB last one. The idle guest may
    // add a few granules of its own (ext4 journal), never the disk.
    assert.ok(r.bytesCovered >= 64 * KiB + 64 * KiB + 1536, `covered ${r.bytesCovered}`);
    assert.ok(r.bytesCovered <= 8 * 64 * KiB, `covered ${r.bytesCovered}`);
    assert.ok(r.bytesShipped <= 1.05 * r.bytesCovered + 4 * KiB, `shipped ${r.bytesShipped} for ${r.bytesCovered}`);
    const [p1, p2] = await points();
    await assertPattern(image(p2!, 'vda'), '0xcd', 3 * MiB, 64 * KiB);
    await assertPattern(image(p2!, 'vdb'), '0xab', VDB_SIZE - 1536, 1536);
    await assertPattern(image(p2!, 'vdb'), '0x5a', 0, 4096);
    // The older point still reads as it was.
    await assertNoPattern(image(p1!, 'vda'), '0xcd', 3 * MiB, 64 * KiB);
  });

  it('resyncs by block hashes when the checkpoint is gone, shipping only what differs', async () => {
    const before = await points();
    const last = before[before.length - 1]!;
    await exec('virsh', ['-c', 'qemu:///system', 'checkpoint-delete', name, last.checkpoint]);
    await hmpWrite(name, 0, '0x77', 10 * MiB, 128 * KiB);
    const r = await frozenSync<SyncJson>(name, ['sync', name], { vda: disks.vda });
    assert.equal(r.kind, 'resync');
    assert.match(r.reason, /is gone/);
    assert.ok(r.bytesCovered >= 128 * KiB && r.bytesCovered <= 16 * 64 * KiB, `covered ${r.bytesCovered}`);
    await assertPattern(image(r.point, 'vda'), '0x77', 10 * MiB, 128 * KiB);
    // The next cycle is incremental again.
    const next = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(next.kind, 'incremental');
  });

  it('resyncs after QEMU dies without saving its bitmaps (kill -9), then goes incremental again', async () => {
    const log = join(dir, `${name}.log`);
    const { stdout: pid } = await exec('cat', [`/run/libvirt/qemu/${name}.pid`]);
    process.kill(Number(pid.trim()), 'SIGKILL');
    for (const deadline = Date.now() + 10_000; (await adapter.powerState(name)) === 'running' && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const from = await fileSize(log);
    await adapter.start(name);
    await waitForSerialLine({ vm: name, file: log, pattern: GUEST_READY, timeoutMs: 60_000, fromOffset: from });
    await hmpWrite(name, 1, '0x99', 5 * MiB, 64 * KiB);
    const r = await frozenSync<SyncJson>(name, ['sync', name], { vda: disks.vda, vdb: disks.vdb });
    assert.equal(r.kind, 'resync');
    assert.match(r.reason, /cannot be used .*missing or broken bitmap/);
    // The guest's boot wrote a little of vda (ext4 mount); nothing near the whole disk travels.
    assert.ok(r.bytesCovered <= 2 * MiB, `covered ${r.bytesCovered}`);
    const next = await vmdrJson<SyncJson & { warnings: string[] }>(['sync', name, '--config', config]);
    assert.equal(next.kind, 'incremental');
    assert.deepEqual(next.warnings, []);
    const { stdout: left } = await exec('virsh', ['-c', 'qemu:///system', 'checkpoint-list', name, '--name']);
    assert.deepEqual(left.trim().split('\n'), [next.checkpoint], 'the broken checkpoint is gone');
  });

  it('a disk hot-added to the protected VM joins its replica without operator action', async () => {
    const vdc = join(dir, 'vdc.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', vdc, String(8 * MiB)]);
    await exec('chmod', ['644', vdc]);
    await exec('virsh', ['-c', 'qemu:///system', 'attach-disk', name, vdc, 'vdc', '--driver', 'qemu', '--subdriver', 'qcow2', '--targetbus', 'virtio']);
    await hmpWrite(name, 2, '0x61', 1 * MiB, 64 * KiB);
    // The checkpoint has no bitmap for vdc: vdc alone is copied whole, vda and vdb stay incremental.
    const r = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(r.kind, 'incremental');
    assert.match(r.reason, /disk vdc joined the VM after checkpoint .*: copied whole/);
    assert.deepEqual(r.point.disks.map((d) => [d.disk, d.sizeBytes]), [['vda', 64 * MiB], ['vdb', VDB_SIZE], ['vdc', 8 * MiB]]);
    await assertPattern(image(r.point, 'vdc'), '0x61', 1 * MiB, 64 * KiB);
    const next = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(next.kind, 'incremental');
    await exec('virsh', ['-c', 'qemu:///system', 'detach-disk', name, 'vdc']);

    // Detached, a point without vdc; then another vdc at the same target, of other bytes: it begins
    // a chain of its own in the replica, so neither vdc's points read the other's bytes.
    const without = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.deepEqual(without.point.disks.map((d) => d.disk), ['vda', 'vdb']);
    const again = join(dir, 'vdc-again.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', again, String(8 * MiB)]);
    await exec('chmod', ['644', again]);
    await exec('virsh', ['-c', 'qemu:///system', 'attach-disk', name, again, 'vdc', '--driver', 'qemu', '--subdriver', 'qcow2', '--targetbus', 'virtio']);
    await hmpWrite(name, 2, '0x62', 2 * MiB, 64 * KiB);
    const back = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.match(back.reason, /disk vdc joined the VM after checkpoint .*: copied whole/);
    const seq = Number(back.point.id.slice(3));
    assert.equal(image(back.point, 'vdc'), join(dir, 'replicas', name, 'vdc', `point-${seq}.g${seq}.qcow2`));
    await assertPattern(image(back.point, 'vdc'), '0x62', 2 * MiB, 64 * KiB);
    await assertPattern(image(back.point, 'vdc'), '0x00', 1 * MiB, 64 * KiB);
    const first = (await points()).find((p) => p.id === r.point.id)!;
    await assertPattern(image(first, 'vdc'), '0x61', 1 * MiB, 64 * KiB);
    await assertPattern(image(first, 'vdc'), '0x00', 2 * MiB, 64 * KiB);
    await exec('virsh', ['-c', 'qemu:///system', 'detach-disk', name, 'vdc']);
  });

  it('keeps up with a guest that writes during syncs; after it stops, replica = source', async () => {
    await vmdrJson<SyncJson>(['protect', writer, '--config', config]);
    const writerLog = join(dir, `${writer}.log`);
    for (let i = 0; i < 3; i += 1) {
      // The guest reports every third write (each followed by its own sync): a loaded machine can
      // stall a TCG guest for longer than a cycle, so wait until it wrote since the last cycle.
      await waitForSerialLine({ vm: writer, file: writerLog, pattern: /^VMDR-GUEST wrote bytes=/, timeoutMs: 60_000, fromOffset: await fileSize(writerLog) });
      const r = await vmdrJson<SyncJson>(['sync', writer, '--config', config]);
      assert.equal(r.kind, 'incremental');
      assert.ok(r.bytesCovered > 0, 'the writer changed something');
    }
    await frozenSync<SyncJson>(writer, ['sync', writer], { vda: disks.wda });
    // Retention (which runs after the answer, in turn with the next cycle) kept three points and
    // merged older ones down into base.qcow2.
    let kept = await points(writer);
    for (const deadline = Date.now() + 30_000; kept.length > 3 && Date.now() < deadline; kept = await points(writer)) {
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(kept.length, 3);
    assert.equal(image(kept[0]!, 'vda'), join(dir, 'replicas', writer, 'vda', 'base.qcow2'));
    for (const p of kept) await exec('qemu-img', ['check', '-U', image(p, 'vda')]);
  });

  it('continuous mode: cycles back to back, rides out a receiver restart, stops cleanly on SIGTERM', async () => {
    const loop = spawn(process.execPath, [CLI, 'sync', writer, '--continuous', '--json', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    const cycles: { result?: SyncJson; error?: string; lagSeconds?: number }[] = [];
    const exited = new Promise<number | null>((resolve) => loop.once('exit', (code) => resolve(code)));
    createInterface({ input: loop.stdout! }).on('line', (line) => cycles.push(JSON.parse(line) as (typeof cycles)[number]));
    const waitFor = async (what: string, ok: () => boolean) => {
      for (const deadline = Date.now() + 90_000; !ok(); ) {
        assert.ok(Date.now() < deadline, `${what}: ${JSON.stringify(cycles)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await waitFor('three cycles', () => cycles.filter((c) => c.result).length >= 3);
      await serve!.stop();
      await waitFor('a failed cycle', () => cycles.some((c) => c.error));
      serve = await startServe(config);
      const failedAt = cycles.length;
      await waitFor('cycles again', () => cycles.slice(failedAt).filter((c) => c.result).length >= 2);
    } finally {
      loop.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
    const ok = cycles.filter((c) => c.result).map((c) => c.result!);
    assert.ok(ok.every((r) => r.kind === 'incremental'), JSON.stringify(ok.map((r) => r.kind)));
    const seqs = ok.map((r) => Number(r.point.id.slice(3)));
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'points only move forward');
    assert.match(cycles.find((c) => c.error)!.error!, /cannot reach the endpoint/);
    for (const c of cycles.filter((x) => x.result)) assert.ok(c.lagSeconds! >= 0 && c.lagSeconds! < 60, `lag ${c.lagSeconds}`);
  });

  it('a receiver killed mid-stream: the next cycle starts from the same checkpoint, no full copy', async () => {
    await serve!.stop();
    serve = await startServe(config, { env: { VMDR_FAILPOINT: 'receiver-frame@2' } });
    const before = await points();
    const last = before[before.length - 1]!;
    for (let i = 0; i < 8; i += 1) await hmpWrite(name, 0, '0x3c', 20 * MiB + i * 512 * KiB, 64 * KiB);
    // The sender in a process of its own, as on a source host apart from the DR site's daemon
    // (handed to this one-host lab's daemon, the sync would die with it: SERVE_LOST).
    const failed = await runVmdr(['sync', name, '--no-daemon', '--config', config]);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /^vmdr: cannot reach the endpoint of site "dr" at https:\/\/127\.0\.0\.1:\d+: .*\n$/);
    assert.equal(await serve.exited, 'SIGKILL');

    serve = await startServe(config);
    const recovered = serve.events.find((e) => e.event === 'receiver') as { recovered: { discarded: string[] } };
    // The cut cycle's overlays, as many as it had made when it died (they are made while its first frames arrive).
    const cut = `point-${Number(last.id.slice(3)) + 1}.qcow2`;
    assert.ok(recovered.recovered.discarded.every((f) => basename(f) === cut), `discarded ${recovered.recovered.discarded.join(', ')}`);
    for (const disk of ['vda', 'vdb']) assert.ok(!(await readdir(join(dir, 'replicas', name, disk))).includes(cut), `${disk}/${cut} of the cut cycle is left`);
    assert.deepEqual((await points()).map((p) => p.id), before.map((p) => p.id));
    const r = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(r.kind, 'incremental');
    assert.equal(r.since, last.checkpoint);
    assert.ok(r.bytesCovered <= 16 * 64 * KiB, `covered ${r.bytesCovered}: no full copy`);
    for (let i = 0; i < 8; i += 1) await assertPattern(image(r.point, 'vda'), '0x3c', 20 * MiB + i * 512 * KiB, 64 * KiB);
    // Besides the overlays the receiver made ahead for the next cycle (next-N.qcow2).
    const files = await readdir(join(dir, 'replicas', name, 'vda'));
    assert.equal(files.filter((f) => /^(base|point-\d+)\.qcow2$/.test(f)).length, (await points()).length + 1, `only base and committed points: ${files}`);
  });

  it('sync --full ships every allocated byte again as a new point; --json streams progress lines', async () => {
    const r = await runVmdr(['sync', name, '--full', '--json', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string; phase?: string; done?: number; total?: number; kind?: string; bytesCovered?: number; point?: Point });
    // Each phase of the cycle, about this protection, ends done == total; ship counts the bytes covered.
    const progress = assertProgress(lines as ProgressEvent[], ['prepare', 'plan', 'ship']);
    assert.deepEqual([...new Set(progress.map((l) => `${l.phase} ${l.unit} ${l.subject?.protection}`))], [`prepare steps ${name}`, `plan steps ${name}`, `ship bytes ${name}`]);
    assert.equal(progress.filter((l) => l.phase === 'plan').pop()!.total, 2, 'planned per disk');
    assert.equal(progress.pop()!.total, 64 * MiB + VDB_SIZE);
    const result = lines[lines.length - 1]!;
    assert.equal(result.event, 'result');
    assert.equal(result.kind, 'full');
    assert.equal(result.bytesCovered, 64 * MiB + VDB_SIZE, 'a full sync covers every byte of both disks');
    await assertPattern(image(result.point!, 'vdb'), '0xab', VDB_SIZE - 1536, 1536);
  });

  it('sync --full --compression off sends the data raw, and the point still equals the source', async () => {
    const packed = await vmdrJson<SyncJson & { point: { dataBytes: number } }>(['sync', name, '--full', '--config', config]);
    const r = await frozenSync<SyncJson & { point: Point & { dataBytes: number } }>(name, ['sync', name, '--full', '--compression', 'off'], { vda: disks.vda, vdb: disks.vdb });
    assert.equal(r.kind, 'full');
    // Raw: every data byte on the wire, plus 40 bytes of header a frame; zstd shipped less than the data.
    assert.ok(r.bytesShipped >= r.point.dataBytes, `shipped ${r.bytesShipped} for ${r.point.dataBytes} bytes of data`);
    assert.ok(r.bytesShipped <= r.point.dataBytes + 64 * KiB, `shipped ${r.bytesShipped} for ${r.point.dataBytes} bytes of data`);
    assert.ok(packed.bytesShipped < packed.point.dataBytes, `with compression: shipped ${packed.bytesShipped} for ${packed.point.dataBytes}`);
  });

  it('shows each protection\'s newest point and lag in vmdr status', async () => {
    const rows = await vmdrJson<{ protection: string; lastPoint: { id: string } | null; lagSeconds: number | null; lastSync: { outcome: string } }[]>([
      'status', '--config', config,
    ]);
    const row = rows.find((x) => x.protection === name)!;
    const newest = (await points()).pop()!;
    assert.equal(row.lastPoint?.id, newest.id);
    assert.ok(row.lagSeconds !== null && row.lagSeconds >= 0 && row.lagSeconds < 120, `lag ${row.lagSeconds}`);
    assert.equal(row.lastSync.outcome, 'committed');
  });

  const checkpointsOn = async (vm: string) => (await exec('virsh', ['-c', 'qemu:///system', 'checkpoint-list', vm, '--name'])).stdout.trim().split('\n').filter(Boolean);
  /** Pulls the plug the way `virsh destroy` does: QEMU gets SIGTERM and saves its bitmaps first. */
  const destroy = (vm: string) => exec('virsh', ['-c', 'qemu:///system', 'destroy', vm]);
  const restart = async (vm: string) => {
    const log = join(dir, `${vm}.log`);
    const from = await fileSize(log);
    await adapter.start(vm);
    await waitForSerialLine({ vm, file: log, pattern: GUEST_READY, timeoutMs: 60_000, fromOffset: from });
  };

  it('syncs a shut-off VM from its images: the writes before and after shutdown, incremental from the same checkpoint', async () => {
    const [checkpoint] = await checkpointsOn(name);
    assert.equal((await points()).pop()!.checkpoint, checkpoint);
    await hmpWrite(name, 0, '0x41', 30 * MiB, 64 * KiB);
    await hmpWrite(name, 1, '0x42', 6 * MiB, 64 * KiB);
    await destroy(name);
    for (const path of [disks.vda, disks.vdb]) {
      const flags = (await bitmaps(path)).get(checkpoint!);
      assert.ok(flags && !flags.includes('in-use'), `${path}: QEMU saved the bitmap of ${checkpoint} on SIGTERM: ${flags}`);
    }
    await offlineWrite(disks.vda, '0x43', 40 * MiB, 64 * KiB);
    await offlineWrite(disks.vdb, '0x44', 8 * MiB, 64 * KiB);

    const r = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(r.kind, 'incremental');
    assert.equal(r.offline, true);
    assert.match(r.reason, /VM is shut off: its disks were read from their images/);
    assert.equal(r.since, checkpoint);
    assert.equal(r.checkpoint, checkpoint, 'the point records the checkpoint its data is the state of');
    assert.equal(r.point.checkpoint, checkpoint);
    assert.deepEqual(r.warnings, []);
    // Four granules of ours, plus the few the idle guest may have written before it was shut off.
    assert.ok(r.bytesCovered >= 4 * 64 * KiB && r.bytesCovered <= 8 * 64 * KiB, `covered ${r.bytesCovered}`);
    await assertPattern(image(r.point, 'vda'), '0x41', 30 * MiB, 64 * KiB);
    await assertPattern(image(r.point, 'vdb'), '0x42', 6 * MiB, 64 * KiB);
    await assertPattern(image(r.point, 'vda'), '0x43', 40 * MiB, 64 * KiB);
    await assertPattern(image(r.point, 'vdb'), '0x44', 8 * MiB, 64 * KiB);
    await compareImages(disks.vda, image(r.point, 'vda'));
    await compareImages(disks.vdb, image(r.point, 'vdb'));
    assert.deepEqual(await checkpointsOn(name), [checkpoint], 'no checkpoint made or deleted offline');

    await restart(name);
    await hmpWrite(name, 1, '0x45', 12 * MiB, 64 * KiB);
    const next = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(next.kind, 'incremental');
    assert.equal(next.offline, undefined);
    assert.equal(next.since, checkpoint);
    assert.deepEqual(next.warnings, []);
    await assertPattern(image(next.point, 'vdb'), '0x45', 12 * MiB, 64 * KiB);
    await assertPattern(image(next.point, 'vda'), '0x43', 40 * MiB, 64 * KiB);
    assert.deepEqual(await checkpointsOn(name), [next.checkpoint]);
  });

  it('a shut-off VM whose checkpoint bitmap is gone resyncs from its images by hashes', async () => {
    const [checkpoint] = await checkpointsOn(name);
    await destroy(name);
    await exec('qemu-img', ['bitmap', '--remove', disks.vdb, checkpoint!]);
    await offlineWrite(disks.vda, '0x46', 44 * MiB, 64 * KiB);
    const r = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(r.kind, 'resync');
    assert.equal(r.offline, true);
    assert.match(r.reason, /missing or broken bitmap/);
    assert.match(r.checkpoint, new RegExp(`^vmdr-${name}-offline-\\d+$`), 'a checkpoint no VM has: the next cycle resyncs');
    // Hashes find our granule, plus the few the idle guest may have written before it was shut off.
    assert.ok(r.bytesCovered >= 64 * KiB && r.bytesCovered <= 8 * 64 * KiB, `covered ${r.bytesCovered}`);
    await assertPattern(image(r.point, 'vda'), '0x46', 44 * MiB, 64 * KiB);
    await compareImages(disks.vda, image(r.point, 'vda'));
    await compareImages(disks.vdb, image(r.point, 'vdb'));

    await restart(name);
    const next = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(next.kind, 'resync');
    assert.match(next.reason, /is gone/);
    assert.ok(next.bytesCovered <= 2 * MiB, `covered ${next.bytesCovered}`);
    const again = await vmdrJson<SyncJson>(['sync', name, '--config', config]);
    assert.equal(again.kind, 'incremental');
    assert.deepEqual(await checkpointsOn(name), [again.checkpoint]);
  });

  it('says in one line what is wrong: unknown VM, receiver down (a shut-off VM syncs offline)', async () => {
    const unknown = await runVmdr(['sync', 'no-such-vm', '--config', config]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^vmdr: .*vmdr\.yaml: no protection named "no-such-vm"\n$/);
    await adapter.stop(writer, { mode: 'force' });
    const off = await vmdrJson<SyncJson>(['sync', writer, '--config', config]);
    assert.equal(off.offline, true);
    await serve!.stop();
    serve = undefined;
    const down = await runVmdr(['sync', name, '--config', config]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^vmdr: cannot reach the endpoint of site "dr" .*\(is `vmdr serve` running on site "dr"\?\)\n$/);
  });
});
