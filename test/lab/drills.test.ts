/**
 * Drills on the real lab (qemu:///system, the lab guest): a drill run by `vmdr serve` on its
 * schedule passes and leaves nothing behind, the ticks that come while it runs are skipped and
 * say why; a drill past its time limit is aborted, torn down and failed; a daemon killed
 * (SIGKILL) mid-drill leaves a drill VM and bubble that the next start removes, recording the
 * drill as interrupted. Judged by the history (`vmdr drill history --json`) and by what
 * `virsh list --all` and `virsh net-list --all` show.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { DrillRunViewBody } from '../../plugin/drills/view.js';
import { bootLabVm, createLabVm, destroyLabVm, labBoot, runVmdr, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { until } from '../helpers/libvirtd.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const MAC = `52:54:00:da:${[...randomBytes(2)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;

describe('drills on the lab (qemu:///system, vmdr serve)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let config: string;
  let serve: ServeProcess | undefined;
  let drNetwork: string;
  const target = () => `${vm.name}-dr`;
  const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]).then((r) => r.stdout.trim());
  const vmdr = (file: string, ...args: string[]) => runVmdr([...args, '--config', file]);
  const history = async (file = config) => {
    const r = await vmdr(file, 'drill', 'history', '--json', '--limit', '500');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as DrillRunViewBody[];
  };
  /** What of a drill is on the host now: its VMs (named after the target) and bubble networks. */
  const drillObjects = async () => {
    const vms = (await virsh('list', '--all', '--name')).split('\n').filter((n) => n.startsWith(`${target()}-drill-`));
    const networks = (await virsh('net-list', '--all', '--name')).split('\n').filter((n) => n.startsWith('vmdr-drill-'));
    return { vms, networks };
  };
  /** The config with a drill of the plan; the same state file, so the same protection and points. */
  const withDrill = async (name: string, drill: string) => {
    const file = join(vm.dir, `${name}.yaml`);
    await writeFile(file, `${await readFile(config, 'utf8')}drills:\n  - { name: ${name}, plan: lab-plan, ${drill} }\n`);
    return file;
  };

  before(async () => {
    vm = await createLabVm('drills', { marker: 'drills-src', diskSize: '32M' });
    drNetwork = `test-dr-${vm.name.slice(-6)}`;
    await vm.adapter.ensureIsolatedNetwork({ name: drNetwork });
    await bootLabVm(vm);
    const boot = labBoot();
    config = await writeOneHostConfig(
      vm,
      `  - name: ${vm.name}
    source: { site: prod, vm: ${vm.name} }
    health: { serial: "^VMDR-GUEST ready", timeout: 90s }
    target:
      site: dr
      vm: ${vm.name}-dr
      hostname: drills-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ mac: "${MAC}", network: ${drNetwork}, addresses: [192.0.2.31/24] }]
plans:
  - { name: lab-plan, groups: [{ name: all, vms: [${vm.name}] }] }
`,
    );
    serve = await startServe(config, { args: ['--no-replicate'] });
    for (const args of [['target', 'provision'], ['protect', vm.name]]) {
      const r = await vmdr(config, ...args);
      assert.equal(r.code, 0, `vmdr ${args.join(' ')}: ${r.stderr}`);
    }
    await serve.stop();
    serve = undefined;
  });

  after(async () => {
    await serve?.kill();
    for (const name of [target(), ...(await drillObjects().catch(() => ({ vms: [] as string[] }))).vms]) {
      await vm.adapter.stop(name, { mode: 'force' }).catch(() => undefined);
      await vm.adapter.undefine(name).catch(() => undefined);
    }
    await vm.adapter.removeNetwork(drNetwork).catch(() => undefined);
    await destroyLabVm(vm);
  });

  it('vmdr serve runs a drill on its schedule: passed, torn down; ticks while it runs are skipped, saying why', async () => {
    const file = await withDrill('every-second', 'schedule: "* * * * * *"');
    const started = Date.now();
    serve = await startServe(file, { args: ['--no-replicate'] });
    assert.ok(serve.events.some((e) => e.event === 'drill-scheduled' && e.drill === 'every-second'), JSON.stringify(serve.events));
    await until('a scheduled drill that passed', async () => (await history(file)).some((r) => r.status === 'passed'), 180_000);
    await serve.stop();
    serve = undefined;
    const stoppedAfterMs = Date.now() - started;
    const runs = (await history(file)).filter((r) => r.drill === 'every-second');
    const passed = runs.find((r) => r.status === 'passed')!;
    assert.equal(passed.trigger, 'schedule');
    assert.equal(passed.reason, null);
    const skipped = runs.filter((r) => r.status === 'skipped');
    assert.ok(skipped.length >= 1, `ticks during the drill were skipped: ${JSON.stringify(runs.map((r) => r.status))}`);
    assert.match(skipped[0]!.reason!.message, /^drill "every-second" skipped: drill "every-second" of plan "lab-plan" \(dr-\S+\) still runs$/);
    assert.equal(skipped[0]!.failover, null);
    // A drill the stop caught half way was torn down and is not judged.
    for (const r of runs.filter((x) => !['passed', 'skipped'].includes(x.status))) {
      assert.equal(r.status, 'interrupted', JSON.stringify(r));
      assert.equal(r.reason?.code, 'DRILL_STOPPED');
    }
    assert.ok(runs.every((r) => r.status !== 'running'));
    assert.deepEqual(await drillObjects(), { vms: [], networks: [] }, 'no drill VM or bubble is left');
    const show = await vmdr(file, 'drill', 'show', passed.id, '--json');
    const shown = JSON.parse(show.stdout) as { report: { status: string; vms: { status: string; guest: string }[] } };
    assert.equal(shown.report.status, 'succeeded');
    assert.equal(shown.report.vms[0]!.status, 'healthy');
    assert.match(shown.report.vms[0]!.guest, /hostname=drills-dr /);
    const points = JSON.parse((await vmdr(config, 'points', vm.name, '--json')).stdout) as { pinned?: boolean }[];
    assert.ok(points.every((x) => !x.pinned), 'the drills let go of their point');
    console.log(`      ${runs.length} runs in ${(stoppedAfterMs / 1000).toFixed(1)} s: ${runs.filter((r) => r.status === 'skipped').length} skipped; passed in ${((Date.parse(passed.endedAt!) - Date.parse(passed.startedAt)) / 1000).toFixed(1)} s`);
  });

  it('a drill past its time limit is aborted, torn down and failed (vmdr drill run exits 1)', async () => {
    const file = await withDrill('too-slow', 'schedule: "0 3 1 1 *", timeLimit: 3s');
    const t0 = Date.now();
    const r = await vmdr(file, 'drill', 'run', 'too-slow');
    const tookMs = Date.now() - t0;
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stderr, 'vmdr: drill "too-slow" failed (' + /dr-\S+(?=\))/.exec(r.stderr)![0] + '): drill "too-slow" ran past its time limit of 3 s: aborted and torn down\n');
    const [run] = (await history(file)).filter((x) => x.drill === 'too-slow');
    assert.equal(run!.status, 'failed');
    assert.equal(run!.trigger, 'manual');
    assert.equal(run!.reason?.code, 'DRILL_TIME_LIMIT');
    assert.deepEqual(await drillObjects(), { vms: [], networks: [] }, 'torn down anyway');
    const report = JSON.parse((await vmdr(file, 'drill', 'show', run!.id, '--json')).stdout).report as { run: { step: string; status: string }[] };
    assert.deepEqual(report.run.find((s) => s.step === 'cleanup')?.status, 'done', 'the runner\'s cleanup ran after the abort');
    console.log(`      aborted at 3 s, torn down, the command ended after ${(tookMs / 1000).toFixed(1)} s`);
  });

  it('vmdr serve killed mid-drill: the next start removes the drill\'s VM and bubble and records it as interrupted', async () => {
    const file = await withDrill('killed', 'schedule: "* * * * * *"');
    serve = await startServe(file, { args: ['--no-replicate'] });
    await until('the drill VM defined', async () => (await drillObjects()).vms.length > 0, 120_000);
    await serve.kill();
    serve = undefined;
    const left = await drillObjects();
    assert.equal(left.vms.length, 1, 'the kill left the drill VM');
    const [running] = (await history(file)).filter((r) => r.drill === 'killed');
    assert.equal(running!.status, 'running');

    // The next start, with the drill gone from the config: what it left is still found and removed.
    serve = await startServe(config, { args: ['--no-replicate'] });
    const told = serve.events.find((e) => e.event === 'drill' && e.drillRun === running!.id);
    assert.ok(told, JSON.stringify(serve.events));
    assert.equal(told.status, 'interrupted');
    await serve.stop();
    serve = undefined;
    const run = (await history()).find((r) => r.id === running!.id)!;
    assert.equal(run.status, 'interrupted');
    assert.equal(run.reason?.code, 'DRILL_INTERRUPTED');
    assert.match(run.reason!.message, /ended before the drill did; torn down by fo-/);
    assert.deepEqual(await drillObjects(), { vms: [], networks: [] }, 'virsh list --all and net-list --all show no drill object');
    assert.equal(await virsh('domstate', target()), 'shut off', 'the target was never touched');
  });
});
