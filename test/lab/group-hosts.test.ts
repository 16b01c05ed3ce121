/**
 * A consistency group whose members are on two source hosts: member A on this machine's own
 * libvirtd (site "host", the group's coordinating site: it is listed first) and member B on the
 * two-site lab's source site, both replicating to the lab's DR site. `vmdr sync --group` on this
 * host holds B through the source site's `vmdr serve`. What a user checks: one group point with
 * both members' points at one instant and the window said; the source site's serve gone: no group
 * point, the line names the member and its host (so does its VM shut off); the coordinator stopped or killed mid-window: the
 * source site's VM runs again within pauseTimeout + 1 s, resumed by its own host.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { bootLabVm, createLabVm, destroyLabVm, labScratchDir, runVmdr, spawnVmdr, type LabVm } from '../helpers/lab.js';
import { assertPattern, hmpWrite } from '../helpers/patterns.js';
import { linkThisHost, twoSites, writeTwoSiteConfigs, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const CYCLES = 5;
const PAUSE_TIMEOUT_MS = 4_000;

interface Point {
  id: string;
  groupInstant: string | null;
  disks: { disk: string; image: string }[];
}

describe('consistency group across two source hosts (this machine and the lab\'s source site, to the lab\'s DR site)', function () {
  this.timeout(300_000);
  let lab: TwoSites;
  let a: LabVm | undefined;
  let b: LabVm | undefined;
  let dir: string | undefined;
  let configs: TwoSiteConfigs;
  let drServe: ServeProcess | undefined;
  let sourceServe: ServeProcess | undefined;
  const coordinator = (args: string[], env: Record<string, string> = {}) => runVmdr([...args, '--config', configs.host!], env);
  const points = async (vm: LabVm) => {
    const r = await lab.dr.vmdr(['points', vm.name, '--json'], { config: configs.dr });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Point[];
  };
  const stateOf = (vm: LabVm) => vm.adapter.powerState(vm.name);

  before(async () => {
    lab = await twoSites();
    await linkThisHost();
    dir = await labScratchDir('group-hosts');
    [a, b] = await Promise.all([createLabVm('gha', { marker: 'gha-src', diskSize: '32M' }), createLabVm('ghb', { marker: 'ghb-src', diskSize: '32M', uri: lab.source.uri })]);
    const protection = (vm: LabVm, site: string) => `  - name: ${vm.name}
    source: { site: ${site}, vm: ${vm.name} }
    rpo: 1h
    target: { site: dr, vm: ${vm.name}-dr, nics: [{ network: ${vm.network} }] }
`;
    configs = await writeTwoSiteConfigs(dir, {
      thisHost: true,
      protections: protection(a, 'host') + protection(b, 'source'),
      extra: `consistencyGroups:
  - { name: app, protections: [${a.name}, ${b.name}], consistency: crash, onMemberDown: wait, memberDownWait: 3s, pauseTimeout: ${PAUSE_TIMEOUT_MS / 1000}s }`,
    });
    await Promise.all([bootLabVm(a), bootLabVm(b)]);
    [drServe, sourceServe] = await Promise.all([lab.dr.serve(configs.dr), lab.source.serve(configs.source, { args: ['--no-replicate'] })]);
  });

  after(async () => {
    await Promise.allSettled([drServe?.stop(), sourceServe?.stop()]);
    await destroyLabVm(a);
    await destroyLabVm(b);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('one group point: both members\' points at one instant, what was written before it in both replicas, the window said', async () => {
    await hmpWrite(a!.name, 0, '0xa1', 8 << 20, 65536);
    await hmpWrite(b!.name, 0, '0xb2', 8 << 20, 65536, lab.source.uri);
    const r = await coordinator(['sync', '--group', 'app']);
    assert.equal(r.code, 0, r.stderr);
    const m = /^group app: group point (app@\d+) \(crash-consistent, members paused (\d+) ms\): (\S+) (rp-\d+), (\S+) (rp-\d+)$/m.exec(r.stdout);
    assert.ok(m, r.stdout);
    const [, instant, windowMs, first, , second] = m;
    assert.deepEqual([first, second], [a!.name, b!.name]);
    assert.ok(Number(windowMs) < PAUSE_TIMEOUT_MS, `paused ${windowMs} ms`);
    const [pa, pb] = [(await points(a!)).at(-1)!, (await points(b!)).at(-1)!];
    assert.equal(pa.groupInstant, instant);
    assert.equal(pb.groupInstant, instant);
    // The storage is the DR site's, on this machine's shared filesystem: read as an operator would.
    await assertPattern(pa.disks[0]!.image, '0xa1', 8 << 20, 65536);
    await assertPattern(pb.disks[0]!.image, '0xb2', 8 << 20, 65536);
    assert.deepEqual([await stateOf(a!), await stateOf(b!)], ['running', 'running']);
  });

  it(`the cross-host window over ${CYCLES} group cycles (median, for docs/benchmarks.md)`, async () => {
    const windows: number[] = [];
    for (let i = 0; i < CYCLES; i++) {
      await hmpWrite(a!.name, 0, `0x${(0x10 + i).toString(16)}`, 4 << 20, 65536);
      await hmpWrite(b!.name, 0, `0x${(0x20 + i).toString(16)}`, 4 << 20, 65536, lab.source.uri);
      const r = await coordinator(['sync', '--group', 'app', '--json']);
      assert.equal(r.code, 0, r.stderr);
      windows.push((JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { windowMs: number }).windowMs);
    }
    const median = [...windows].sort((x, y) => x - y)[Math.floor(windows.length / 2)]!;
    console.log(`      cross-host group pause windows (ms): ${windows.join(', ')}; median ${median}`);
    assert.ok(median < 2_000, `median ${median} ms`);
  });

  it('the source site\'s `vmdr serve` gone: no group point, the line names the member and its host; back, the next cycle gives one', async () => {
    const before = [(await points(a!)).length, (await points(b!)).length];
    await sourceServe!.kill();
    const r = await coordinator(['sync', '--group', 'app']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr.trim(), new RegExp(`^vmdr: consistency group "app": member "${b!.name}": site "source" \\(its host\\) did not answer: .*\\(waited \\d+ s\\); no group point was taken`));
    assert.deepEqual([(await points(a!)).length, (await points(b!)).length], before, 'nobody was captured');
    assert.deepEqual([await stateOf(a!), await stateOf(b!)], ['running', 'running']);
    sourceServe = await lab.source.serve(configs.source, { args: ['--no-replicate'] });
    const again = await coordinator(['sync', '--group', 'app']);
    assert.equal(again.code, 0, again.stderr);
  });

  it('the source site\'s VM shut off: no group point, the line names the member, its state and its site', async () => {
    const before = [(await points(a!)).length, (await points(b!)).length];
    await b!.adapter.stop(b!.name, { mode: 'force' });
    try {
      const r = await coordinator(['sync', '--group', 'app']);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr.trim(), new RegExp(`^vmdr: consistency group "app": member "${b!.name}": VM "${b!.name}" is shutoff on site "source" \\(waited \\d+ s\\); no group point was taken`));
      assert.deepEqual([(await points(a!)).length, (await points(b!)).length], before, 'nobody was captured');
    } finally {
      await bootLabVm(b!);
    }
  });

  /** Starts a group cycle on this host with `failpoint`, and resolves once the source site's member is paused. */
  const midWindow = async (failpoint: string) => {
    const run = spawnVmdr(['sync', '--group', 'app', '--config', configs.host!], { VMDR_FAILPOINT: failpoint });
    const deadline = Date.now() + 60_000;
    while ((await stateOf(b!)) !== 'paused') {
      assert.ok(Date.now() < deadline, 'the source site\'s member was never paused');
      await sleep(20);
    }
    return { run, heldAt: Date.now() };
  };
  const runningWithin = async (vm: LabVm, from: number, limitMs: number) => {
    while ((await stateOf(vm)) !== 'running') {
      assert.ok(Date.now() - from <= limitMs, `VM ${vm.name} still ${await stateOf(vm)} ${Date.now() - from} ms after the hold`);
      await sleep(20);
    }
    return Date.now() - from;
  };

  it('the coordinator stopped mid-window (its connections open): the source site resumes its member by itself within pauseTimeout + 1 s', async () => {
    const { run, heldAt } = await midWindow('group-window-held:stop');
    try {
      const tookMs = await runningWithin(b!, heldAt, PAUSE_TIMEOUT_MS + 1_000);
      console.log(`      source site's member resumed by its host ${tookMs} ms after the hold (pauseTimeout ${PAUSE_TIMEOUT_MS} ms)`);
    } finally {
      run.process.kill('SIGKILL');
      await run.done;
      // This host's own member stays paused by the killed coordinator (g16-safety's part): resumed by hand.
      await exec('virsh', ['-c', 'qemu:///system', 'resume', a!.name]).catch(() => undefined);
    }
  });

  it('the coordinator killed mid-window: the source site resumes its member at once (its connection closed); the next cycle gives a group point', async () => {
    const run = spawnVmdr(['sync', '--group', 'app', '--config', configs.host!], { VMDR_FAILPOINT: 'group-window-held' });
    const done = await run.done;
    const killedAt = Date.now();
    assert.equal(done.signal, 'SIGKILL', done.stderr);
    // Killed inside the window: its own member is still paused (nobody resumes it).
    assert.equal(await stateOf(a!), 'paused');
    const tookMs = await runningWithin(b!, killedAt, PAUSE_TIMEOUT_MS + 1_000);
    console.log(`      source site's member running ${tookMs} ms after its coordinator was killed`);
    await exec('virsh', ['-c', 'qemu:///system', 'resume', a!.name]).catch(() => undefined);
    const r = await coordinator(['sync', '--group', 'app']);
    assert.equal(r.code, 0, r.stderr);
    const instant = /group point (app@\d+)/.exec(r.stdout)![1];
    assert.equal((await points(a!)).at(-1)!.groupInstant, instant);
    assert.equal((await points(b!)).at(-1)!.groupInstant, instant);
  });
});
