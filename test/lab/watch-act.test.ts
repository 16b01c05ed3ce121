/**
 * The watch acting on a real source (issue 15's second slice): the lab guest under qemu:///system
 * watched by `vmdr serve` (the built CLI) every 1 s with missed 3.
 *
 * - confirm: the source destroyed → a failover prepared that changes nothing until `vmdr failover
 *   approve RUN`; approved, it runs (fencing the source) to failed-over.
 * - automatic: an outage shorter than the threshold does nothing; the source destroyed → failing
 *   over within interval × missed + 1 s, the source fenced, the target healthy with its DR identity
 *   (the guest prints it); after a revert, a second down does nothing until `vmdr watch clear`.
 *
 * One host plays both sites: the config's check refuses `automatic` onto the source's own host (the
 * same URI), so the source site is named by another URI of the same libvirtd (qemu+unix:///system).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { SignedReport } from '../../plugin/reports/signed.js';
import { GUEST_READY, runVmdr, waitForSerialLine, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, serveAndRun } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';
import { waitForWatchLine, watchLines as linesOf } from '../helpers/watch-lines.js';

const exec = promisify(execFile);
const MAC = `52:54:00:d8:${[...randomBytes(2)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;

describe('the watch failing over a lab source (qemu:///system)', function () {
  this.timeout(900_000);
  let vm: LabVm;
  let drNetwork: string;
  let automatic: string;
  let confirm: string;
  let serve: ServeProcess | undefined;
  const vmdr = (config: string, ...args: string[]) => runVmdr([...args, '--config', config]);

  const watchLines = (from: number) => linesOf(serve!, from);
  const waitFor = (from: number, state: string, timeoutMs: number) => waitForWatchLine(serve!, from, state, timeoutMs);
  const revert = async (config: string) => {
    const r = await vmdr(config, 'failover', vm.name, '--revert');
    assert.equal(r.code, 0, r.stderr);
    if ((await vm.adapter.getVm(vm.name)).powerState !== 'running') await vm.adapter.start(vm.name);
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 90_000 });
  };

  before(async () => {
    ({ vm, drNetwork, config: automatic } = await createProtectedLabVm('watchact', {
      hostname: 'watchact-dr',
      nic: { mac: MAC, addresses: ['192.0.2.31/24'] },
      settings: ['watch: { policy: automatic, interval: 1s, missed: 3 }'],
    }));
    const text = (await readFile(automatic, 'utf8')).replace('{ name: prod, uri: "qemu:///system" }', '{ name: prod, uri: "qemu+unix:///system" }');
    await writeFile(automatic, text);
    confirm = join(vm.dir, 'confirm.yaml');
    await writeFile(confirm, text.replace('policy: automatic', 'policy: confirm'));
    serve = await serveAndRun(confirm, [['target', 'provision'], ['protect', vm.name]]);
  });

  after(async () => {
    await serve?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
  });

  it('confirm: a down source prepares a failover that changes nothing until approved, then runs', async () => {
    await waitFor(0, 'healthy', 10_000);
    const from = serve!.events.length;
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const down = await waitFor(from, 'down', 6000);
    assert.match(down.detail!, /; a failover of \S+ is prepared: it waits for an approval$/);
    const prepared = await waitFor(from, 'failing-over', 30_000);
    const id = /failover (fo-\S+) prepared, waiting for an approval: `vmdr failover approve \1`/.exec(prepared.detail!)?.[1];
    assert.ok(id, prepared.detail!);

    // Unapproved: nothing changes (the target stays off, the source is not fenced, the protection replicates).
    await sleep(3000);
    assert.equal((await vm.adapter.getVm(`${vm.name}-dr`)).powerState, 'shutoff');
    assert.deepEqual(watchLines(from).map((e) => e.state), ['suspect', 'down', 'failing-over']);
    const status = await vmdr(confirm, 'status', '--json');
    assert.match(status.stdout, /"role":\s*"replicating"/);

    // The source back before anyone approved: the prepared failover is withdrawn, its approval refused.
    await vm.adapter.start(vm.name);
    const back = await waitFor(from, 'healthy', 30_000);
    assert.equal(back.detail, `the prepared failover ${id} is withdrawn: its source answers again and nobody approved it`);
    const late = await vmdr(confirm, 'failover', 'approve', id);
    assert.equal(late.code, 1, late.stdout);
    assert.equal(late.stderr.trim().split('\n').length, 1, late.stderr);
    assert.equal((await vm.adapter.getVm(`${vm.name}-dr`)).powerState, 'shutoff');
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 90_000 });

    // Down again: a new failover is prepared, and this one is approved.
    const again = serve!.events.length;
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const prepared2 = await waitFor(again, 'failing-over', 30_000);
    const id2 = /failover (fo-\S+) prepared, waiting for an approval/.exec(prepared2.detail!)?.[1];
    assert.ok(id2 && id2 !== id, prepared2.detail!);
    const approved = await vmdr(confirm, 'failover', 'approve', id2);
    assert.equal(approved.code, 0, approved.stderr);
    assert.match(approved.stdout, new RegExp(`^${id2}: step "approval" approved by \\S+\\n$`));
    await waitFor(again, 'failed-over', 300_000);
    assert.deepEqual(
      watchLines(from).map((e) => e.state),
      ['suspect', 'down', 'failing-over', 'healthy', 'suspect', 'down', 'failing-over', 'failing-over', 'fenced', 'failed-over'],
      JSON.stringify(watchLines(from)),
    );
    assert.match(watchLines(again).find((e) => e.state === 'fenced')!.detail!, new RegExp(`^source VM fenced by failover ${id2} \\(it was shutoff\\)$`));
    assert.equal((await vm.adapter.getVm(`${vm.name}-dr`)).powerState, 'running');
    await serve!.stop();
    serve = undefined;
    await revert(confirm);
  });

  it('automatic: an outage shorter than the threshold does nothing', async () => {
    serve = await startServe(automatic, { args: ['--no-replicate'] });
    await waitFor(0, 'healthy', 10_000);
    const from = serve.events.length;
    // Paused: the VM check misses (not running) for about 1.5 s, under the threshold of 3 beats.
    await exec('virsh', ['-c', 'qemu:///system', 'suspend', vm.name]);
    await sleep(1500);
    await exec('virsh', ['-c', 'qemu:///system', 'resume', vm.name]);
    await sleep(4000);
    assert.deepEqual(watchLines(from).map((e) => e.state), ['suspect', 'healthy']);
  });

  let firstRun = '';
  it('automatic: the source destroyed → failing over within interval × missed + 1 s, fenced, the target up with its DR identity', async () => {
    const from = serve!.events.length;
    const killed = Date.now();
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const down = await waitFor(from, 'down', 6000);
    const started = await waitFor(from, 'failing-over', 10_000);
    const detectionMs = Date.parse(down.at) - killed;
    const startMs = Date.parse(started.at) - killed;
    console.log(`      down ${detectionMs} ms, failover started ${startMs} ms after the kill (target 4000 ms)`);
    assert.ok(startMs <= 4000, `failover started ${startMs} ms after the kill`);
    assert.match(down.detail!, /; failing over \S+ automatically$/);
    firstRun = /^automatic failover (fo-\S+) started$/.exec(started.detail!)?.[1] ?? '';
    assert.ok(firstRun, started.detail!);
    const done = await waitFor(from, 'failed-over', 300_000);
    console.log(`      target healthy ${Date.parse(done.at) - killed} ms after the kill`);
    assert.deepEqual(watchLines(from).map((e) => e.state), ['suspect', 'down', 'failing-over', 'fenced', 'failed-over']);
    assert.match(done.detail!, new RegExp(`^automatic failover ${firstRun} succeeded`));
    const shown = await vmdr(automatic, 'report', 'show', firstRun, '--json');
    assert.equal(shown.code, 0, shown.stderr);
    const { report } = JSON.parse(shown.stdout) as SignedReport;
    assert.equal(report.status, 'succeeded');
    assert.match(report.vms[0]!.guest!, new RegExp(`hostname=watchact-dr mac=${MAC} ip=192.0.2.31/24 .*marker=watchact-src`));
    assert.equal((await vm.adapter.getVm(vm.name)).labels.role, 'fenced');
  });

  it('automatic: after it, a second down does nothing until `vmdr watch clear`', async () => {
    await serve!.stop();
    serve = undefined;
    await revert(automatic);
    serve = await startServe(automatic, { args: ['--no-replicate'] });
    await waitFor(0, 'healthy', 10_000);
    const from = serve.events.length;
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const down = await waitFor(from, 'down', 6000);
    assert.match(down.detail!, new RegExp(`; no automatic failover: failover ${firstRun} of ${vm.name} holds it until cleared with \`vmdr watch clear ${vm.name}\`$`));
    await sleep(4000);
    assert.deepEqual(watchLines(from).map((e) => e.state), ['suspect', 'down']);
    assert.equal((await vm.adapter.getVm(`${vm.name}-dr`)).powerState, 'shutoff');

    const cleared = await vmdr(automatic, 'watch', 'clear', vm.name);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.equal(cleared.stdout, `${vm.name}: cleared by ${userInfo().username}: the watch may act again after automatic failover ${firstRun}\n`);
  });
});
