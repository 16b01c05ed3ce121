/**
 * A plan failing over through the watch, on the lab (qemu:///system): two lab guests protected in
 * one plan of two priority groups (db before web), the plan watched with policy automatic every
 * 1 s, missed 3. The web source destroyed → the plan fails over as a plan: one run, both sources
 * fenced (db's still ran: powered off first), db's target healthy before web's group started, both
 * healthy, one report.
 *
 * One host plays both sites; the source site is named by another URI of the same libvirtd
 * (qemu+unix:///system) so the config's own-host guard lets `automatic` through (as watch-act).
 */
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SignedReport } from '../../plugin/reports/signed.js';
import { bootLabVm, createLabVm, runVmdr, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, labProtection, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';
import { waitForWatchLine, watchLines } from '../helpers/watch-lines.js';

describe('a plan failed over by the watch (qemu:///system)', function () {
  this.timeout(600_000);
  let db: LabVm | undefined;
  let web: LabVm | undefined;
  let drNetwork = '';
  let config = '';
  let serve: ServeProcess | undefined;
  const plan = 'shop';

  before(async () => {
    web = await createLabVm('wplanweb', { marker: 'wplanweb-src', diskSize: '32M' });
    await bootLabVm(web);
    ({ vm: db, drNetwork, config } = await createProtectedLabVm('wplandb', {
      more: (_vm, network) => `${labProtection(web!, { network, health: true })}plans:
  - name: ${plan}
    groups: [{ name: db, vms: [${'DB'}] }, { name: web, vms: [${web!.name}] }]
    watch: { policy: automatic, interval: 1s, missed: 3 }
`,
    }));
    const text = await readFile(config, 'utf8');
    await writeFile(config, text.replace('vms: [DB]', `vms: [${db.name}]`).replace('{ name: prod, uri: "qemu:///system" }', '{ name: prod, uri: "qemu+unix:///system" }'));
    serve = await serveAndRun(config, [['target', 'provision'], ['protect', db.name], ['protect', web.name]]);
  });

  after(async () => {
    await serve?.stop();
    await destroyProtectedLabVm(web, drNetwork);
    await destroyProtectedLabVm(db, drNetwork);
  });

  it('one source destroyed: the whole plan fails over in one run, in priority order, both sources fenced, one report', async () => {
    const of = (protection: string) => watchLines(serve!, 0).filter((e) => e.protection === protection);
    for (const deadline = Date.now() + 15_000; of(db!.name).length === 0 || of(web!.name).length === 0; await new Promise((r) => setTimeout(r, 50))) {
      assert.ok(Date.now() < deadline, `both healthy within 15 s: ${JSON.stringify(watchLines(serve!, 0))}`);
    }
    const from = serve!.events.length;
    await web!.adapter.stop(web!.name, { mode: 'force' });
    const down = await waitForWatchLine(serve!, from, 'down', 10_000);
    assert.equal(down.protection, web!.name);
    assert.match(down.detail!, new RegExp(`; failing over plan ${plan} automatically$`));
    for (const deadline = Date.now() + 300_000; watchLines(serve!, from).filter((e) => e.state === 'failed-over').length < 2; await new Promise((r) => setTimeout(r, 200))) {
      assert.ok(Date.now() < deadline, `both failed over within 300 s: ${JSON.stringify(watchLines(serve!, from))}`);
    }
    const lines = (p: string) => watchLines(serve!, from).filter((e) => e.protection === p);
    // web: suspect (at libvirt's event of its stop, or the next beat), down, then the run.
    assert.deepEqual(lines(web!.name).map((e) => e.state), ['suspect', 'down', 'failing-over', 'fenced', 'failed-over'], JSON.stringify(lines(web!.name)));
    // db's own source still answered: only the run's events (a beat its bound cut short on a loaded machine may add a suspect and a healthy first).
    const dbRun = lines(db!.name).filter((e) => e.state !== 'suspect' && e.state !== 'healthy');
    assert.deepEqual(dbRun.map((e) => e.state), ['failing-over', 'fenced', 'failed-over'], JSON.stringify(lines(db!.name)));
    assert.ok(!lines(db!.name).some((e) => e.state === 'down'), JSON.stringify(lines(db!.name)));
    const runs = new Set(watchLines(serve!, from).flatMap((e) => /\b(fo-\S+?)\b(?: started| succeeded| \(it was)/.exec(e.detail ?? '')?.[1] ?? []));
    assert.equal(runs.size, 1, `one run: ${[...runs].join(', ')}`);
    const run = [...runs][0]!;
    assert.match(dbRun[1]!.detail!, new RegExp(`^source VM fenced by failover ${run} \\(it was running\\)$`));
    assert.match(lines(web!.name)[3]!.detail!, new RegExp(`^source VM fenced by failover ${run} \\(it was shutoff\\)$`));

    for (const vm of [db!, web!]) {
      assert.equal((await vm.adapter.getVm(vm.name)).labels.role, 'fenced');
      assert.equal((await vm.adapter.getVm(vm.name)).powerState, 'shutoff');
      assert.equal((await vm.adapter.getVm(`${vm.name}-dr`)).powerState, 'running');
    }
    const shown = await runVmdr(['report', 'show', run, '--json', '--config', config]);
    assert.equal(shown.code, 0, shown.stderr);
    const { report } = JSON.parse(shown.stdout) as SignedReport;
    assert.equal(report.plan, plan);
    assert.equal(report.status, 'succeeded');
    assert.deepEqual(report.groups.map((g) => [g.name, g.status]), [['db', 'done'], ['web', 'done']]);
    // Priority order: web's group started once db's had ended (its target healthy).
    assert.ok(Date.parse(report.groups[1]!.startedAt!) >= Date.parse(report.groups[0]!.endedAt!), JSON.stringify(report.groups));
    assert.deepEqual(report.vms.map((v) => [v.protection, v.status]), [[db!.name, 'healthy'], [web!.name, 'healthy']]);
    // One run recorded: one report directory.
    const reports = (await readdir(join(db!.dir, 'reports'))).filter((d) => d.startsWith('fo-'));
    assert.deepEqual(reports, [run]);
  });
});
