/**
 * Fan-out: one source VM replicated to two DR sites by two protections, each with its own
 * checkpoints, chain, lag and points. The source site's `vmdr serve` runs both loops; copy A's DR
 * storage is on the source site itself, copy B's on the DR site, reached through that site's
 * daemon (two daemons on this one libvirtd, as in cross-site.test.ts). The DR site's daemon stops:
 * A keeps committing while B says it cannot reach its site; the daemon comes back and B catches up
 * by an incremental. A failover of A fences the source: B's loop stops with one line, not a resync,
 * and a failover of B is refused while A's copy is the live one.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { bootLabVm, createLabVm, destroyLabVm, labBoot, runVmdr, type LabVm } from '../helpers/lab.js';
import { assertOneLineError } from '../helpers/assertions.js';
import { assertPattern, compareImages, hmpFlush, hmpWrite, paused } from '../helpers/patterns.js';
import { writeTwoSiteConfigs, type TwoSiteConfigs } from '../helpers/two-sites.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const MiB = 1024 * 1024;

interface Point {
  id: string;
  time: string;
  checkpoint: string;
  disks: { disk: string; image: string }[];
}
interface CycleEvent {
  event: 'cycle';
  protection: string;
  lagSeconds?: number;
  result?: { kind: string; reason: string; point: Point; checkpoint: string; bytesCovered: number; bytesShipped: number; durationMs: number };
  error?: string;
  code?: string;
}
interface Status {
  protection: string;
  lastPoint: { id: string; time: string } | null;
  lagSeconds: number | null;
  pointsProblem: string | null;
  lastSync: { outcome: string; error: string | null } | null;
}

describe('fan-out: one VM replicated to two DR sites, each copy on its own (qemu:///system, two daemons)', function () {
  this.timeout(300_000);
  let vm: LabVm;
  let configs: TwoSiteConfigs;
  let network: string;
  let drDaemon: ServeProcess | undefined;
  let sourceDaemon: ServeProcess | undefined;
  const a = () => `${vm.name}-a`;
  const b = () => `${vm.name}-b`;
  const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]).then((r) => r.stdout.trim());
  const cycles = (from: number, protection: string) =>
    sourceDaemon!.events.slice(from).filter((e): e is CycleEvent & Record<string, unknown> => e.event === 'cycle' && e.protection === protection);
  const committed = (from: number, protection: string) => cycles(from, protection).filter((c) => c.result);
  /** The first committed cycle of `protection` after event `from` whose point was taken after `after` (ms). */
  const nextPoint = async (from: number, protection: string, after: number, timeoutMs = 60_000) => {
    for (const deadline = Date.now() + timeoutMs; ; await sleep(100)) {
      const c = committed(from, protection).find((x) => Date.parse(x.result!.point.time) > after);
      if (c) return c.result!;
      assert.ok(Date.now() < deadline, `${protection}: no point after ${new Date(after).toISOString()} within ${timeoutMs} ms: ${JSON.stringify(cycles(from, protection).slice(-3))}`);
    }
  };
  const status = async () => {
    const r = await runVmdr(['status', '--json', '--config', configs.source]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Status[];
  };
  const startDr = async () => (drDaemon = await startServe(configs.dr, { args: ['--site', 'dr', '--no-replicate'] }));

  before(async () => {
    vm = await createLabVm('fanout', { marker: 'fanout-src', diskSize: '32M' });
    network = `test-fo-${vm.name.slice(-6)}`;
    await vm.adapter.ensureIsolatedNetwork({ name: network });
    await bootLabVm(vm);
    const boot = labBoot();
    const copy = (name: string, site: string) => `  - name: ${name}
    source: { site: source, vm: ${vm.name} }
    rpo: 4s
    health: { serial: "^VMDR-GUEST ready", timeout: 90s }
    target:
      site: ${site}
      vm: ${name}
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${network} }]
`;
    // B uncompressed: a pattern written costs its size on the wire, as real data would.
    configs = await writeTwoSiteConfigs(vm.dir, { oneHost: true, protections: copy(`${vm.name}-a`, 'source') + copy(`${vm.name}-b`, 'dr').replace('    rpo: 4s\n', '    rpo: 4s\n    compression: off\n') });
    await startDr();
    sourceDaemon = await startServe(configs.source, { args: ['--site', 'source'] });
  });

  after(async () => {
    await sourceDaemon?.stop();
    await drDaemon?.stop();
    if (!vm) return;
    for (const target of [a(), b()]) {
      await vm.adapter.stop(target, { mode: 'force' }).catch(() => undefined);
      await vm.adapter.undefine(target).catch(() => undefined);
    }
    await vm.adapter.removeNetwork(network).catch(() => undefined);
    await destroyLabVm(vm);
  });

  it('each copy gets its own chain of points, both equal to the source; each keeps its own checkpoint on the source VM', async () => {
    const from = sourceDaemon!.events.length;
    await hmpWrite(vm.name, 0, '0x5a', 20 * MiB, 256 * 1024);
    // The guest paused: any point taken from now on is the source disk as it is.
    await paused(vm.name, async () => {
      const since = Date.now();
      const [pa, pb] = await Promise.all([nextPoint(from, a(), since), nextPoint(from, b(), since)]);
      await hmpFlush(vm.name, 0);
      await compareImages(vm.disk, pa.point.disks[0]!.image);
      await compareImages(vm.disk, pb.point.disks[0]!.image);
      assert.notEqual(pa.point.disks[0]!.image, pb.point.disks[0]!.image, 'two replicas, not one');
      assert.match(pa.checkpoint, new RegExp(`^vmdr-${a()}-\\d+$`));
      assert.match(pb.checkpoint, new RegExp(`^vmdr-${b()}-\\d+$`));
    });
    // A few cycles later each copy still goes incremental from its own checkpoint: neither deleted the other's.
    const later = sourceDaemon!.events.length;
    const since = Date.now();
    const [ra, rb] = await Promise.all([nextPoint(later, a(), since), nextPoint(later, b(), since)]);
    assert.equal(ra.kind, 'incremental', ra.reason);
    assert.equal(rb.kind, 'incremental', rb.reason);
    const names = (await virsh('checkpoint-list', vm.name, '--name')).split('\n').map((n) => n.trim()).filter(Boolean);
    assert.ok(names.some((n) => n.startsWith(`vmdr-${a()}-`)) && names.some((n) => n.startsWith(`vmdr-${b()}-`)), `checkpoints: ${names.join(', ')}`);
    const failed = [...cycles(from, a()), ...cycles(from, b())].filter((c) => c.error);
    assert.deepEqual(failed, [], 'no cycle failed: the two loops took turns on the VM');
  });

  it('the DR site of copy B down: copy A keeps committing, B says why and lags; back up, B catches up by an incremental', async () => {
    await drDaemon!.stop();
    drDaemon = undefined;
    const down = Date.now();
    const from = sourceDaemon!.events.length;
    await hmpWrite(vm.name, 0, '0x6b', 21 * MiB, 128 * 1024);
    const written = Date.now();
    // A: points go on, the write in them.
    const pa = await nextPoint(from, a(), written);
    await assertPattern(pa.point.disks[0]!.image, '0x6b', 21 * MiB, 128 * 1024);
    const pa2 = await nextPoint(from, a(), Date.parse(pa.point.time));
    assert.ok(Date.parse(pa2.point.time) > Date.parse(pa.point.time));
    // B: its cycles fail and say so, none commits.
    for (const deadline = Date.now() + 30_000; !cycles(from, b()).some((c) => c.error); await sleep(100)) assert.ok(Date.now() < deadline, 'B reported no failure');
    assert.equal(committed(from, b()).length, 0);
    const failure = cycles(from, b()).find((c) => c.error)!;
    assert.ok(failure.code && failure.code !== 'INTERNAL', JSON.stringify(failure));
    const s = await status();
    const sa = s.find((x) => x.protection === a())!;
    const sb = s.find((x) => x.protection === b())!;
    assert.ok(sa.lagSeconds !== null && sa.lagSeconds < 10, `A lags ${sa.lagSeconds} s`);
    assert.ok(Date.parse(sa.lastPoint!.time) > down);
    assert.equal(sb.lastSync?.outcome, 'failed', JSON.stringify(sb));
    assert.ok(sb.pointsProblem, `B's status says why its points are unknown: ${JSON.stringify(sb)}`);
    console.log(`      B down: A committed ${committed(from, a()).length} points; B: ${failure.code}: ${failure.error}; status: ${sb.pointsProblem}`);

    await sleep(2_000);
    await startDr();
    const back = Date.now();
    const pb = await nextPoint(from, b(), back, 90_000);
    assert.equal(pb.kind, 'incremental', `caught up by ${pb.kind}: ${pb.reason}`);
    assert.ok(pb.bytesCovered >= 128 * 1024 && pb.bytesCovered < 4 * MiB, `caught up covering ${pb.bytesCovered} bytes, not the 32 MiB disk`);
    await assertPattern(pb.point.disks[0]!.image, '0x6b', 21 * MiB, 128 * 1024);
    const sb2 = (await status()).find((x) => x.protection === b())!;
    assert.equal(sb2.pointsProblem, null);
    assert.ok(sb2.lagSeconds !== null && sb2.lagSeconds < 20, `B lags ${sb2.lagSeconds} s after catching up`);
    console.log(`      B caught up ${((Date.now() - back) / 1000).toFixed(1)} s after its site came back: ${pb.kind}, ${pb.bytesCovered} bytes covered, ${pb.bytesShipped} shipped`);
  });

  it('a slow link to B delays A by at most one of B\'s captures: the two take turns', async () => {
    // 2 MB/s to B from now on (the daemon reloads its config; a bandwidth change restarts no loop).
    await writeFile(configs.source, (await readFile(configs.source, 'utf8')).replace('    compression: off\n', '    compression: off\n    bandwidth: 2MB/s\n'));
    for (const deadline = Date.now() + 10_000; !sourceDaemon!.events.some((e) => e.event === 'reloaded'); await sleep(100)) assert.ok(Date.now() < deadline, 'the daemon did not reload its config');
    const from = sourceDaemon!.events.length;
    await hmpWrite(vm.name, 0, '0x7c', 22 * MiB, 4 * MiB);
    const written = Date.now();
    const pb = await nextPoint(from, b(), written, 60_000);
    await assertPattern(pb.point.disks[0]!.image, '0x7c', 22 * MiB, 4 * MiB);
    // A's points on either side of B's slow capture: A waits for it, then goes on.
    const bAt = Date.parse(pb.point.time);
    const after = await nextPoint(from, a(), bAt);
    const times = committed(0, a()).map((c) => Date.parse(c.result!.point.time));
    const before = Math.max(...times.filter((t) => t < bAt));
    const gap = Date.parse(after.point.time) - before;
    console.log(`      B's cycle with 4 MiB at 2 MB/s: ${(pb.durationMs / 1000).toFixed(1)} s; A's points around it ${(gap / 1000).toFixed(1)} s apart (2 s when alone)`);
    assert.ok(pb.durationMs >= 1_500, `B's cycle took ${pb.durationMs} ms: the limit did not hold`);
    // At most one of B's captures, A's own interval and a cycle of A's: never two of B's in a row.
    assert.ok(gap <= pb.durationMs + 2_000 + 3_000, `A's points ${gap} ms apart, more than one of B's cycles (${pb.durationMs} ms) could explain`);
    await writeFile(configs.source, (await readFile(configs.source, 'utf8')).replace('    bandwidth: 2MB/s\n', ''));
  });

  it('a failover of copy A fences the source; copy B stops with one line and takes no point from the fenced VM', async () => {
    const provision = await runVmdr(['target', 'provision', a(), '--config', configs.source]);
    assert.equal(provision.code, 0, provision.stderr);
    const from = sourceDaemon!.events.length;
    const r = await runVmdr(['failover', a(), '--force', '--json', '--config', configs.source]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await virsh('domstate', vm.name), 'shut off');
    assert.match(await virsh('dumpxml', '--inactive', vm.name), /key="role">fenced</);
    let line: Record<string, unknown> | undefined;
    for (const deadline = Date.now() + 60_000; !line; await sleep(100)) {
      line = sourceDaemon!.events.slice(from).find((e) => e.event === 'paused' && e.protection === b());
      assert.ok(line || Date.now() < deadline, `B did not pause: ${JSON.stringify(sourceDaemon!.events.slice(from).filter((e) => e.protection === b()))}`);
    }
    console.log(`      B: ${String(line!.message)}`);
    assert.equal(line!.reason, 'fenced-for-other-copy');
    assert.equal(line!.fencedBy, a());
    const pausedAt = sourceDaemon!.events.length;
    const before = committed(from, b()).length;
    await sleep(6_000);
    assert.equal(committed(from, b()).length, before, 'B took no point from the fenced VM');
    assert.equal(sourceDaemon!.events.slice(pausedAt).filter((e) => e.protection === b()).length, 0, 'said once, then quiet');
    assert.equal(await virsh('domstate', vm.name), 'shut off', 'nobody started the fenced source');

    // Nor is copy B booted beside A's: its failover is refused, naming the live copy.
    const provisionB = await runVmdr(['target', 'provision', b(), '--config', configs.dr]);
    assert.equal(provisionB.code, 0, provisionB.stderr);
    const second = await runVmdr(['failover', b(), '--config', configs.dr]);
    assertOneLineError(second, new RegExp(`^vmdr: source VM "${vm.name}" of protection "${b()}" is fenced for the failover of protection "${a()}" \\(.+\\): that copy is the live one`));
    assert.equal(await virsh('domstate', b()), 'shut off');
  });
});
