/**
 * `vmdr serve` runs a consistency group's cycles by itself (qemu:///system, one daemon serving
 * both lab sites). What a user checks: group points come without asking, both members' points of
 * one instant; the members' cycle lines say their group, no member cycles alone; `vmdr sync
 * --group` meanwhile waits for the loop's cycle and takes its own; `vmdr status` shows the group; a
 * protection added by a reload cycles on its own beside the group; a member shut off
 * (onMemberDown: fail) fails the group's cycles with the reason, in status too, and the loop backs
 * off, then commits again once the VM runs; `vmdr points` says which point is kept for the group.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { bootLabVm, createLabVm, destroyLabVm, runVmdr, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { labProtection } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

interface Event {
  event: string;
  protection?: string;
  group?: string;
  outcome?: string;
  instant?: string;
  windowMs?: number;
  durationMs?: number;
  code?: string;
  error?: string;
  result?: { point: { id: string } };
  loops?: { started: string[] };
}
interface Point {
  id: string;
  groupInstant: string | null;
  tier: string;
}
interface GroupStatus {
  group: string;
  members: string[];
  lastGroupPoint: { id: string; ageSeconds: number } | null;
  lastCycle: { outcome: string; error: string | null } | null;
  windowMs: number | null;
  lagSeconds: number | null;
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

describe('consistency groups in vmdr serve: the group loop (qemu:///system)', function () {
  this.timeout(300_000);
  let a: LabVm | undefined;
  let b: LabVm | undefined;
  let c: LabVm | undefined;
  let config: string;
  let serve: ServeProcess | undefined;
  /** When each event arrived (ms), by its index in serve.events. */
  const arrived: number[] = [];
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const points = async (vm: LabVm) => JSON.parse((await vmdr('points', vm.name, '--json')).stdout) as Point[];
  const events = () => (serve?.events ?? []) as unknown as Event[];
  const groupCycles = (outcome: string) => events().filter((e) => e.event === 'group-cycle' && e.outcome === outcome);
  const waitFor = async (what: string, ok: () => boolean, timeoutMs = 90_000) => {
    for (const deadline = Date.now() + timeoutMs; !ok(); await sleep(50)) {
      while (arrived.length < events().length) arrived.push(Date.now());
      assert.ok(Date.now() < deadline, `${what}: ${JSON.stringify(events().slice(-10))}\n${serve?.stderr()}`);
    }
    while (arrived.length < events().length) arrived.push(Date.now());
  };
  const groupOf = async () => {
    const r = await vmdr('status', '--json');
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { protection: string; consistencyGroup: GroupStatus | null }[];
    return rows.find((row) => row.protection === a!.name)!.consistencyGroup!;
  };

  before(async () => {
    [a, b, c] = await Promise.all([
      createLabVm('gsrva', { marker: 'gsrva-src', diskSize: '32M' }),
      createLabVm('gsrvb', { marker: 'gsrvb-src', diskSize: '32M' }),
      // Never started: a shut-off VM's cycles read its images.
      createLabVm('gsrvc', { marker: 'gsrvc-src', diskSize: '32M' }),
    ]);
    await Promise.all([bootLabVm(a), bootLabVm(b)]);
    // rpo 6s: a cycle every 3 s; keep 1: only what retention must keep besides the newest stays.
    const members = labProtection(a, { network: a.network, settings: ['rpo: 6s', 'retention: { keep: 1 }'] }) + labProtection(b, { network: a.network, settings: ['rpo: 6s'] });
    const group = `consistencyGroups:\n  - { name: app, protections: [${a.name}, ${b.name}], onMemberDown: fail, pauseTimeout: 5s }\n`;
    config = await writeOneHostConfig(a, members + group);
    serve = await startServe(config, { args: [] });
  });

  after(async () => {
    await serve?.stop();
    for (const vm of [a, b, c]) await destroyLabVm(vm);
  });

  it('makes group points by itself: both members\' points of each instant, no member cycling alone; vmdr sync --group waits its turn', async () => {
    await waitFor('two committed group cycles', () => groupCycles('committed').length >= 2);
    const asked = await vmdr('sync', '--group', 'app');
    assert.equal(asked.code, 0, asked.stderr);
    assert.match(asked.stdout, /^group app: group point app@\d+ \(crash-consistent, members paused \d+ ms\)/m);
    await waitFor('three more committed group cycles', () => groupCycles('committed').length >= 5);
    const [pa, pb] = [await points(a!), await points(b!)];
    for (const e of groupCycles('committed').slice(-2)) {
      assert.ok(pa.some((p) => p.groupInstant === e.instant) || pb.some((p) => p.groupInstant === e.instant), `a point of ${e.instant}`);
    }
    const instantsOf = (ps: Point[]) => new Set(ps.flatMap((p) => (p.groupInstant ? [p.groupInstant] : [])));
    const shared = [...instantsOf(pb)].filter((i) => instantsOf(pa).has(i));
    assert.ok(shared.length >= 1, 'the members share the group point');
    const memberCycles = events().filter((e) => e.event === 'cycle' && (e.protection === a!.name || e.protection === b!.name));
    assert.ok(memberCycles.length >= 4);
    assert.ok(memberCycles.every((e) => e.group === 'app'), 'every member cycle was the group\'s');
    const committed = groupCycles('committed');
    console.log(
      `      serve's group cycles: ${committed.length}, time median ${median(committed.map((e) => e.durationMs!))} ms ` +
        `(${committed.map((e) => e.durationMs).join(', ')}), window median ${median(committed.map((e) => e.windowMs!))} ms (${committed.map((e) => e.windowMs).join(', ')})`,
    );

    const g = await groupOf();
    assert.equal(g.group, 'app');
    assert.deepEqual(g.members, [a!.name, b!.name]);
    assert.match(g.lastGroupPoint!.id, /^app@\d+$/);
    assert.ok(g.lastGroupPoint!.ageSeconds < 60);
    assert.equal(g.lastCycle!.outcome, 'committed');
    assert.ok(g.windowMs! >= 0 && g.windowMs! < 5_000);
    assert.ok(g.lagSeconds! >= 0);
    const text = await vmdr('status');
    assert.match(text.stdout, new RegExp(`^app +${a!.name},${b!.name} +app@\\d+ \\S+ +[\\d.]+s +committed(?: \\(a cycle runs\\))? +\\d+ ms +[\\d.]+s$`, 'm'), text.stdout);
  });

  it('a protection a reload adds, outside the group, cycles on its own beside the group', async () => {
    const text = await readFile(config, 'utf8');
    await writeFile(config, text.replace('consistencyGroups:', `${labProtection(c!, { network: a!.network })}consistencyGroups:`));
    await waitFor('the reload', () => events().some((e) => e.event === 'reloaded' && e.loops!.started.includes(c!.name)));
    await waitFor('its own cycle', () => events().some((e) => e.event === 'cycle' && e.protection === c!.name && e.result !== undefined));
    assert.ok(events().filter((e) => e.event === 'cycle' && e.protection === c!.name).every((e) => e.group === undefined));
    const before = groupCycles('committed').length;
    await waitFor('the group still cycles', () => groupCycles('committed').length > before);
  });

  it('a member shut off (onMemberDown: fail): the group cycle fails with the reason (status too), the loop backs off, and commits again once it runs', async () => {
    await b!.adapter.stop(b!.name, { mode: 'force' });
    // A cycle under way when the VM went may fail otherwise (its export cut): the ones after say why.
    const down = () => groupCycles('failed').filter((e) => e.code === 'GROUP_MEMBER_DOWN');
    await waitFor('three group cycles failed for the member down', () => down().length >= 3, 60_000);
    const failed = events()
      .map((e, i) => ({ e, at: arrived[i]! }))
      .filter(({ e }) => e.event === 'group-cycle' && e.code === 'GROUP_MEMBER_DOWN');
    assert.match(failed[0]!.e.error!, new RegExp(`member "${b!.name}": VM "${b!.name}" is shutoff`));
    const gaps = [failed[1]!.at - failed[0]!.at, failed[2]!.at - failed[1]!.at];
    assert.ok(gaps[0]! >= 800 && gaps[1]! >= 1_800 && gaps[1]! > gaps[0]!, `the back-off grows: ${gaps.join(', ')} ms`);

    const g = await groupOf();
    assert.equal(g.lastCycle!.outcome, 'failed');
    assert.match(g.lastCycle!.error!, new RegExp(`^GROUP_MEMBER_DOWN: consistency group "app": member "${b!.name}": VM "${b!.name}" is shutoff`));
    const text = await vmdr('status');
    assert.match(text.stdout, /failed: GROUP_MEMBER_DOWN: consistency group "app"/);

    // A point of a's own (handed to the daemon): with keep 1, its point of the newest group point
    // stays for the group only.
    const solo = await vmdr('sync', a!.name);
    assert.equal(solo.code, 0, solo.stderr);
    const pa = await points(a!);
    assert.equal(pa.at(-1)!.groupInstant, null);
    assert.equal(pa.at(-1)!.tier, 'newest');
    const kept = pa.filter((p) => p.tier === 'group');
    assert.equal(kept.length, 1, JSON.stringify(pa));
    assert.equal(kept[0]!.groupInstant, g.lastGroupPoint!.id);
    assert.match((await vmdr('points', a!.name)).stdout, new RegExp(`^${kept[0]!.id} .* group point `, 'm'));

    const committedBefore = groupCycles('committed').length;
    await bootLabVm(b!);
    await waitFor('a committed group cycle once the member runs', () => groupCycles('committed').length > committedBefore, 90_000);
    assert.equal((await groupOf()).lastCycle!.outcome, 'committed');
  });
});
