/**
 * Drills on the real lab (qemu:///system, the lab guest): a drill run by `vmdr serve` on its
 * schedule passes and leaves nothing behind, the ticks that come while it runs are skipped and
 * say why; a drill past its time limit is aborted, torn down and failed; a daemon killed
 * (SIGKILL) mid-drill leaves a drill VM and bubble that the next start removes, recording the
 * drill as interrupted; a runbook's approval never given is ended by the time limit. Judged by
 * the history (`vmdr drill history --json`) and by what `virsh list --all` and `virsh net-list
 * --all` show.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { DrillRunViewBody } from '../../plugin/drills/view.js';
import { bootLabVm, createLabVm, destroyLabVm, runVmdr, type LabVm } from '../helpers/lab.js';
import { until } from '../helpers/libvirtd.js';
import { createProtectedLabVm, destroyProtectedLabVm, labProtection, serveAndRun } from '../helpers/protected-vm.js';
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
    ({ vm, drNetwork, config } = await createProtectedLabVm('drills', {
      hostname: 'drills-dr',
      nic: { mac: MAC, addresses: ['192.0.2.31/24'] },
      more: (vm) => `plans:\n  - { name: lab-plan, groups: [{ name: all, vms: [${vm.name}] }] }\n`,
    }));
    serve = await serveAndRun(config, [['target', 'provision'], ['protect', vm.name]]);
    await serve.stop();
    serve = undefined;
  });

  after(async () => {
    await serve?.kill();
    await destroyProtectedLabVm(vm, drNetwork, (await drillObjects().catch(() => ({ vms: [] as string[] }))).vms);
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

  it("an approval never given: the drill's time limit tears it down and fails it", async () => {
    const runbook = join(vm.dir, 'wait-for-approval.yaml');
    await writeFile(runbook, 'steps:\n  - { name: boot, start: all }\n  - name: go-ahead\n    approval: { message: nobody will answer }\n');
    const file = await withDrill('unanswered', `schedule: "0 3 1 1 *", timeLimit: 20s, runbook: wait`);
    await writeFile(file, `${await readFile(file, 'utf8')}runbooks:\n  - { name: wait, file: ${runbook} }\n`);
    const r = await vmdr(file, 'drill', 'run', 'unanswered');
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stdout, /go-ahead/, 'the run reached the approval');
    assert.match(r.stderr, /drill "unanswered" ran past its time limit of 20 s: aborted and torn down\n$/);
    const [run] = (await history(file)).filter((x) => x.drill === 'unanswered');
    assert.equal(run!.reason?.code, 'DRILL_TIME_LIMIT');
    assert.deepEqual(await drillObjects(), { vms: [], networks: [] }, 'the drill VM it booted is gone');
    const report = JSON.parse((await vmdr(file, 'drill', 'show', run!.id, '--json')).stdout).report as { vms: { status: string }[]; run: { step: string; status: string }[] };
    assert.equal(report.vms[0]!.status, 'healthy', 'its VM had come up before the wait');
    assert.equal(report.run.find((s) => s.step === 'cleanup')?.status, 'done');
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

  it('two tenants\' drills at once: each VM on its own isolated bubble; replication goes on and retention keeps the pinned points', async () => {
    const vms = { acme: await createLabVm('drill-acme', { marker: 'acme-src', diskSize: '32M' }), globex: await createLabVm('drill-globex', { marker: 'globex-src', diskSize: '32M' }) };
    const tenantProtection = (tenant: 'acme' | 'globex', health: string) =>
      labProtection(vms[tenant], { network: drNetwork, settings: [`tenant: ${tenant}`, 'retention: { keep: 1 }', `health: ${health}`] });
    // The drills' VMs never print what their health check waits for: both run until their time limit.
    const tenantConfig = async (name: string, health: string) => {
      const file = join(vm.dir, `${name}.yaml`);
      const base = await readFile(config, 'utf8');
      await writeFile(
        file,
        base.replace('protections:\n', 'tenants:\n  - { name: acme }\n  - { name: globex }\nprotections:\n').replace('plans:\n', `${tenantProtection('acme', health)}${tenantProtection('globex', health)}plans:\n`) +
          `  - { name: plan-acme, tenant: acme, groups: [{ name: all, vms: [${vms.acme.name}] }] }
  - { name: plan-globex, tenant: globex, groups: [{ name: all, vms: [${vms.globex.name}] }] }
drills:
  - { name: drill-acme, plan: plan-acme, schedule: "0 3 1 1 *", timeLimit: 40s }
  - { name: drill-globex, plan: plan-globex, schedule: "0 3 1 1 *", timeLimit: 40s }
`,
      );
      return file;
    };
    const healthy = await tenantConfig('tenants', '{ serial: "^VMDR-GUEST ready", timeout: 90s }');
    const never = await tenantConfig('tenants-never', '{ serial: "^NEVER-PRINTED", timeout: 90s }');
    const points = async (name: string) => JSON.parse((await vmdr(healthy, 'points', name, '--json')).stdout) as { id: string; pinned?: boolean }[];
    try {
      await Promise.all(Object.values(vms).map((v) => bootLabVm(v)));
      serve = await startServe(healthy, { args: ['--no-replicate', '--no-drills'] });
      for (const args of [['target', 'provision'], ['protect', vms.acme.name], ['protect', vms.globex.name]]) {
        const r = await vmdr(healthy, ...args);
        assert.equal(r.code, 0, `vmdr ${args.join(' ')}: ${r.stderr}`);
      }
      const drills = Promise.all(['drill-acme', 'drill-globex'].map((d) => vmdr(never, 'drill', 'run', d, '--json')));
      // Both drills' VMs up at once, each on the bubble of its own run and tenant.
      await until('both drill VMs running', async () => {
        const running = (await virsh('list', '--name')).split('\n');
        return Object.values(vms).every((v) => running.some((n) => n.startsWith(`${v.name}-dr-drill-`)));
      }, 120_000);
      const bubbles: Record<string, string> = {};
      for (const [tenant, v] of Object.entries(vms)) {
        const drillVm = (await virsh('list', '--name')).split('\n').find((n) => n.startsWith(`${v.name}-dr-drill-`))!;
        const nics = (await virsh('domiflist', drillVm)).split('\n').slice(2).map((l) => l.trim().split(/\s+/));
        assert.equal(nics.length, 1, `${drillVm}: ${JSON.stringify(nics)}`);
        const network = nics[0]![2]!;
        assert.match(network, new RegExp(`^vmdr-drill-\\S+-${tenant}$`), 'the bubble of its run and tenant');
        const xml = await virsh('net-dumpxml', network);
        assert.ok(!/<forward|<ip/.test(xml), `the bubble ${network} has no forwarding and no host address: ${xml}`);
        bubbles[tenant] = network;
      }
      assert.notEqual(bubbles.acme, bubbles.globex, 'the tenants share no network');
      const bridge = async (n: string) => /<bridge name='([^']+)'/.exec(await virsh('net-dumpxml', n))![1];
      assert.notEqual(await bridge(bubbles.acme!), await bridge(bubbles.globex!), 'nor a bridge');

      // Replication goes on during the drill; retention (keep 1) leaves the point it booted.
      const pinned = (await points(vms.acme.name)).find((x) => x.pinned);
      assert.ok(pinned, 'the drill pinned the point it booted');
      for (let i = 0; i < 2; i++) {
        const sync = await vmdr(healthy, 'sync', vms.acme.name);
        assert.equal(sync.code, 0, sync.stderr);
      }
      const during = await points(vms.acme.name);
      assert.ok(during.some((x) => x.id === pinned.id && x.pinned), `the pinned point is kept: ${JSON.stringify(during)}`);
      assert.ok(during.length >= 2, 'new points came in during the drill');

      const results = await drills;
      for (const r of results) {
        assert.equal(r.code, 1, r.stderr);
        const { run } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { run: DrillRunViewBody };
        assert.equal(run.status, 'failed');
        assert.equal(run.reason?.code, 'DRILL_TIME_LIMIT');
      }
      const left = (await virsh('net-list', '--all', '--name')).split('\n');
      assert.ok(!left.includes(bubbles.acme!) && !left.includes(bubbles.globex!), 'both bubbles removed');
      assert.deepEqual((await virsh('list', '--all', '--name')).split('\n').filter((n) => n.includes('-dr-drill-')), []);
      assert.ok((await points(vms.acme.name)).every((x) => !x.pinned), 'the drill let go of its point');
      const after = await vmdr(healthy, 'sync', vms.acme.name);
      assert.equal(after.code, 0, after.stderr);
      assert.equal((await points(vms.acme.name)).length, 1, 'unpinned, it goes the way of retention');
    } finally {
      await serve?.stop();
      serve = undefined;
      for (const v of Object.values(vms)) {
        for (const name of (await virsh('list', '--all', '--name')).split('\n').filter((n) => n.startsWith(`${v.name}-dr`))) {
          await v.adapter.stop(name, { mode: 'force' }).catch(() => undefined);
          await v.adapter.undefine(name).catch(() => undefined);
        }
        await destroyLabVm(v);
      }
    }
  });
});
