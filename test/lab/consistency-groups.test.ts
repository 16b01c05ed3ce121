/**
 * Consistency groups on the real lab: two lab guests protected as one group (crash: paused
 * together). What a user checks: `vmdr sync --group` says the group point and how long the members
 * were paused; both members' points carry it (`vmdr points --json`: groupInstant); a marker written
 * to both VMs' disks before the cycle is in both replicas at the group point; a member shut off
 * gives no group point and says why; a drill of the plan boots the group point for both members,
 * even when one member has a newer point of its own; --point naming a group point a member lacks is
 * refused before anything started.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { createLabVm, bootLabVm, destroyLabVm, runVmdr, spawnVmdr, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { labProtection, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const CYCLES = 5;

interface Point {
  id: string;
  groupInstant: string | null;
  disks: { disk: string; image?: string }[];
}

/** Writes `pattern` at `offset` of the running VM's disk through QEMU's block layer (the dirty bitmap sees it). */
async function writeMarker(vm: string, pattern: number, offset: string): Promise<void> {
  await exec('virsh', ['-c', 'qemu:///system', 'qemu-monitor-command', vm, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P ${pattern} ${offset} 64k"`]);
}

/** Whether the image (read through its backing chain) holds `pattern` at `offset`. */
async function holds(image: string, pattern: number, offset: string): Promise<boolean> {
  return exec('qemu-io', ['-r', '-f', 'qcow2', '-U', '-c', `read -P ${pattern} ${offset} 64k`, image]).then(
    (r) => !/Pattern verification failed/.test(r.stdout),
    () => false,
  );
}

describe('consistency groups: members captured at one instant (qemu:///system)', function () {
  this.timeout(300_000);
  let a: LabVm | undefined;
  let b: LabVm | undefined;
  let config: string;
  let serve: ServeProcess | undefined;
  /** The instant of the cycle where a member failed after the window. */
  let partial: string;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const points = async (vm: LabVm) => JSON.parse((await vmdr('points', vm.name, '--json')).stdout) as Point[];

  before(async () => {
    [a, b] = await Promise.all([createLabVm('grpa', { marker: 'grpa-src', diskSize: '32M' }), createLabVm('grpb', { marker: 'grpb-src', diskSize: '32M' })]);
    await Promise.all([bootLabVm(a), bootLabVm(b)]);
    const group = `consistencyGroups:
  - { name: app, protections: [${a.name}, ${b.name}], consistency: crash, onMemberDown: wait, memberDownWait: 30s, pauseTimeout: 5s }
plans:
  - name: app-plan
    groups: [{ name: all, vms: [${a.name}, ${b.name}] }]
`;
    config = await writeOneHostConfig(a, labProtection(a, { network: a.network }) + labProtection(b, { network: a.network }) + group);
    serve = await serveAndRun(config, [['protect', a.name], ['protect', b.name]]);
  });

  after(async () => {
    await serve?.stop();
    await destroyLabVm(b);
    await destroyLabVm(a);
  });

  it('a group cycle pauses both members for a short window; both points carry one group point, and both replicas hold what was written before it', async () => {
    await writeMarker(a!.name, 0xa1, '8M');
    await writeMarker(b!.name, 0xb2, '8M');
    const r = await vmdr('sync', '--group', 'app');
    assert.equal(r.code, 0, r.stderr);
    const m = /^group app: group point (app@\d+) \(crash-consistent, members paused (\d+) ms\): (\S+) (rp-\d+), (\S+) (rp-\d+)$/m.exec(r.stdout);
    assert.ok(m, r.stdout);
    const [, instant, windowMs] = m;
    assert.ok(Number(windowMs) < 5_000, `paused ${windowMs} ms`);
    const [pa, pb] = [(await points(a!)).at(-1)!, (await points(b!)).at(-1)!];
    assert.equal(pa.groupInstant, instant);
    assert.equal(pb.groupInstant, instant);
    assert.ok(await holds(pa.disks[0]!.image!, 0xa1, '8M'), 'member a\'s replica holds its marker');
    assert.ok(await holds(pb.disks[0]!.image!, 0xb2, '8M'), 'member b\'s replica holds its marker');
    // Both VMs run again after the window.
    for (const vm of [a!, b!]) assert.equal(await vm.adapter.powerState(vm.name), 'running');
  });

  it(`the pause window over ${CYCLES} group cycles (median, for docs/benchmarks.md)`, async () => {
    const windows: number[] = [];
    for (let i = 0; i < CYCLES; i++) {
      await writeMarker(a!.name, 0x10 + i, '4M');
      await writeMarker(b!.name, 0x20 + i, '4M');
      const r = await vmdr('sync', '--group', 'app', '--json');
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { windowMs: number; instant: string };
      windows.push(result.windowMs);
    }
    const sorted = [...windows].sort((x, y) => x - y);
    console.log(`      group pause windows (ms): ${windows.join(', ')}; median ${sorted[Math.floor(sorted.length / 2)]}`);
    assert.ok(sorted[Math.floor(sorted.length / 2)]! < 2_000);
  });

  it('a member shut off (onMemberDown: wait): the cycle waits for it, captures nobody meanwhile, and takes both once it runs', async () => {
    const before = (await points(a!)).length;
    await b!.adapter.stop(b!.name, { mode: 'force' });
    const run = spawnVmdr(['sync', '--group', 'app', '--config', config]);
    let ended = false;
    void run.done.then(() => (ended = true));
    await sleep(3_000);
    assert.equal(ended, false, 'the cycle waits for the member');
    assert.equal((await points(a!)).length, before, 'nobody was captured while it waited');
    await bootLabVm(b!);
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    const [pa, pb] = [(await points(a!)).at(-1)!, (await points(b!)).at(-1)!];
    assert.ok(pa.groupInstant && pa.groupInstant === pb.groupInstant);
  });

  it('a member failing after the window (its VM destroyed while it ships): the other commits alone, no group point, and the line says who', async () => {
    const aBefore = (await points(a!)).length;
    const bBefore = (await points(b!)).length;
    // Something to read: a cycle with no change reads nothing from its export.
    await writeMarker(a!.name, 0x5a, '12M');
    await writeMarker(b!.name, 0x5b, '12M');
    // The CLI stops itself once both backups have begun (after the window), while the VM goes away.
    const run = spawnVmdr(['sync', '--group', 'app', '--config', config], { VMDR_FAILPOINT: 'sync-backup-running:stop' });
    const stopped = async () => (await readFile(`/proc/${run.process.pid}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.startsWith('T');
    for (const deadline = Date.now() + 60_000; !(await stopped()); await sleep(50)) assert.ok(Date.now() < deadline, 'the cycle never reached its shipping');
    await b!.adapter.stop(b!.name, { mode: 'force' });
    let ended = false;
    void run.done.then(() => (ended = true));
    while (!ended) {
      if (await stopped()) run.process.kill('SIGCONT');
      await sleep(50);
    }
    const r = await run.done;
    await bootLabVm(b!);
    assert.equal(r.code, 1, r.stdout);
    const line = r.stderr.trim();
    assert.match(line, new RegExp(`consistency group "app": no group point: member "${b!.name}" failed \\(.+\\); "${a!.name}" committed rp-\\d+ alone`));
    const pa = await points(a!);
    assert.equal(pa.length, aBefore + 1, 'member a committed its own point');
    assert.equal((await points(b!)).length, bBefore, 'member b has none');
    partial = pa.at(-1)!.groupInstant!;
    assert.ok(partial);
  });

  it('a drill of the plan boots the group point for both members, even when one has a newer point of its own', async () => {
    const group = (await points(b!)).at(-1)!.groupInstant!;
    const ga = (await points(a!)).find((p) => p.groupInstant === group)!;
    const gb = (await points(b!)).find((p) => p.groupInstant === group)!;
    const solo = await vmdr('sync', a!.name);
    assert.equal(solo.code, 0, solo.stderr);
    const newest = (await points(a!)).at(-1)!;
    assert.notEqual(newest.id, ga.id);
    assert.equal(newest.groupInstant, null);

    const drill = await vmdr('failover', '--plan', 'app-plan', '--test');
    assert.equal(drill.code, 0, drill.stderr + drill.stdout);
    assert.match(drill.stdout, new RegExp(`${a!.name} -> .*\\(${ga.id} of `));
    assert.match(drill.stdout, new RegExp(`${b!.name} -> .*\\(${gb.id} of `));

    // The instant of the cycle member b failed in: a has a point of it, b none: refused before anything started.
    const incomplete = await vmdr('failover', '--plan', 'app-plan', '--test', '--point', partial);
    assert.equal(incomplete.code, 1);
    assert.ok(incomplete.stderr.startsWith(`vmdr: group point ${partial} of consistency group "app" is incomplete: a member has no point of it (`), incomplete.stderr);
    const unknown = await vmdr('failover', '--plan', 'app-plan', '--test', '--point', 'app@1');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr.trim(), /group point app@1 of consistency group "app" is not a point of protection/);
  });
});

describe('consistency groups: application, members frozen together through their guest agents (qemu:///system)', function () {
  this.timeout(300_000);
  let a: LabVm | undefined;
  let b: LabVm | undefined;
  let config: string;
  let serve: ServeProcess | undefined;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const points = async (vm: LabVm) => JSON.parse((await vmdr('points', vm.name, '--json')).stdout) as Point[];

  before(async () => {
    [a, b] = await Promise.all([
      createLabVm('grpappa', { marker: 'grpappa-src', diskSize: '32M', agent: true }),
      createLabVm('grpappb', { marker: 'grpappb-src', diskSize: '32M', agent: true }),
    ]);
    await Promise.all([bootLabVm(a), bootLabVm(b)]);
    const group = `consistencyGroups:\n  - { name: shop, protections: [${a.name}, ${b.name}], consistency: application, onMemberDown: fail, pauseTimeout: 5s }\n`;
    config = await writeOneHostConfig(a, labProtection(a, { network: a.network }) + labProtection(b, { network: a.network }) + group);
    serve = await serveAndRun(config, [['protect', a.name], ['protect', b.name]]);
  });

  after(async () => {
    await serve?.stop();
    await destroyLabVm(b);
    await destroyLabVm(a);
  });

  it('both members\' points are application-consistent and share one group point', async () => {
    await writeMarker(a!.name, 0xc3, '8M');
    await writeMarker(b!.name, 0xd4, '8M');
    const r = await vmdr('sync', '--group', 'shop', '--json');
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { instant: string; consistency: string; windowMs: number; members: { point: Point & { consistency: string } }[] };
    assert.equal(result.consistency, 'application');
    assert.ok(result.windowMs > 0 && result.windowMs < 5_000, `frozen ${result.windowMs} ms`);
    for (const m of result.members) {
      assert.equal(m.point.consistency, 'application');
      assert.equal(m.point.groupInstant, result.instant);
    }
    assert.ok(await holds(result.members[0]!.point.disks[0]!.image!, 0xc3, '8M'));
    assert.ok(await holds(result.members[1]!.point.disks[0]!.image!, 0xd4, '8M'));
    const agentStatus = async (vm: string) => (JSON.parse((await exec('virsh', ['-c', 'qemu:///system', 'qemu-agent-command', vm, '{"execute":"guest-fsfreeze-status"}'])).stdout) as { return: string }).return;
    assert.deepEqual([await agentStatus(a!.name), await agentStatus(b!.name)], ['thawed', 'thawed']);
  });
  it('a member shut off (onMemberDown: fail): no group point, the other member untouched, and the line says why', async () => {
    const before = (await points(a!)).length;
    await b!.adapter.stop(b!.name, { mode: 'force' });
    const r = await vmdr('sync', '--group', 'shop');
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), `vmdr: consistency group "shop": member "${b!.name}": VM "${b!.name}" is shutoff; no group point was taken (start the member, or take it out of the group)`);
    assert.equal((await points(a!)).length, before, 'no member was captured');
    assert.equal(await a!.adapter.powerState(a!.name), 'running');
  });
});
