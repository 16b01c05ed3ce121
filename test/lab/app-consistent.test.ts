/**
 * Application-consistent points on the real lab: a lab guest running Debian's qemu-guest-agent
 * (its channel in the VM's definition), protected with `consistency: application`. What a user
 * checks: the point's consistency in `vmdr points` and its JSON, the cycle's line, the guest's own
 * console (its fsfreeze hook prints each freeze and thaw), and `guest-fsfreeze-status` answering
 * "thawed" after the cycle. The agent's faults are the real agent's: its fsfreeze hook made to
 * sleep before the freeze (the freeze answers after the timeout) or after the thaw (the thaw never
 * answers in time: qemu-ga thaws first, then runs the hook), through the agent's own guest-exec;
 * the agent killed in the guest; a VM without the channel.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { HoldRecords } from '../../hypervisors/libvirt/hold-records.js';
import { createLabVm, bootLabVm, destroyLabVm, fileSize, runVmdr, spawnVmdr, waitForSerialLine, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { labProtection, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const FREEZE_TIMEOUT_S = 2;

interface Point {
  id: string;
  consistency: 'application' | 'crash';
  consistencyIssue: { code: string; message: string } | null;
  freezeWindowMs: number | null;
}

/** One guest agent command through libvirt, as `virsh qemu-agent-command` runs it; its `return`. */
async function agent(vm: string, command: Record<string, unknown>, timeoutS = 5): Promise<unknown> {
  const { stdout } = await exec('virsh', ['-c', 'qemu:///system', 'qemu-agent-command', vm, JSON.stringify(command), '--timeout', String(timeoutS)]);
  return (JSON.parse(stdout) as { return: unknown }).return;
}

/** A shell line run in the guest by its agent (guest-exec), waited for. */
async function guestShell(vm: string, line: string): Promise<void> {
  const { pid } = (await agent(vm, { execute: 'guest-exec', arguments: { path: '/bin/sh', arg: ['-c', line] } })) as { pid: number };
  for (const deadline = Date.now() + 10_000; ; await sleep(100)) {
    const status = (await agent(vm, { execute: 'guest-exec-status', arguments: { pid } })) as { exited: boolean; exitcode?: number };
    if (status.exited) return assert.equal(status.exitcode, 0, `${line} failed in the guest`);
    assert.ok(Date.now() < deadline, `${line} did not end in the guest`);
  }
}

const fsfreezeStatus = (vm: string) => agent(vm, { execute: 'guest-fsfreeze-status' }, 2);

describe('application-consistent points through the QEMU guest agent (qemu:///system)', function () {
  this.timeout(300_000);
  let app: LabVm | undefined;
  let plain: LabVm | undefined;
  let config: string;
  let serve: ServeProcess | undefined;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const points = async (vm: LabVm) => JSON.parse((await vmdr('points', vm.name, '--json')).stdout) as Point[];
  const sync = async (vm: LabVm) => {
    const r = await vmdr('sync', vm.name);
    assert.equal(r.code, 0, r.stderr);
    return { line: r.stdout, point: (await points(vm)).at(-1)! };
  };
  /** The guest's fsfreeze hook lines printed since `from`, once its thaw line is there. */
  const hookLines = async (vm: LabVm, from: number) => {
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: /^VMDR-GUEST fsfreeze thaw$/, timeoutMs: 10_000, fromOffset: from });
    const text = (await readFile(vm.log)).subarray(from).toString('utf8');
    return [...text.matchAll(/^VMDR-GUEST fsfreeze (\w+)$/gm)].map((m) => m[1]);
  };

  before(async () => {
    [app, plain] = await Promise.all([
      createLabVm('appc', { marker: 'appc-src', diskSize: '32M', agent: true }),
      createLabVm('appc-plain', { marker: 'plain-src', diskSize: '32M' }),
    ]);
    await Promise.all([bootLabVm(app), bootLabVm(plain)]);
    const settings = ['consistency: application', `freezeTimeout: ${FREEZE_TIMEOUT_S}s`];
    config = await writeOneHostConfig(app, labProtection(app, { network: app.network, settings }) + labProtection(plain, { network: plain.network, settings }));
    serve = await serveAndRun(config, []);
  });

  after(async () => {
    await serve?.stop();
    await destroyLabVm(plain);
    await destroyLabVm(app);
  });

  it('a cycle freezes the guest for its checkpoint and thaws it: the point is application-consistent', async () => {
    const vm = app!;
    const from = await fileSize(vm.log);
    const r = await vmdr('protect', vm.name);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /recovery point rp-1 \(application-consistent, frozen \d+ ms\) at checkpoint/);
    const [first] = await points(vm);
    assert.equal(first!.consistency, 'application');
    assert.equal(first!.consistencyIssue, null);
    assert.ok(first!.freezeWindowMs! > 0 && first!.freezeWindowMs! < FREEZE_TIMEOUT_S * 2000, `froze for ${first!.freezeWindowMs} ms`);
    // The guest saw it: its hook printed the freeze, then the thaw; its agent says thawed.
    assert.deepEqual(await hookLines(vm, from), ['freeze', 'thaw']);
    assert.equal(await fsfreezeStatus(vm.name), 'thawed');

    const next = await sync(vm);
    assert.match(next.line, /recovery point rp-2 \(application-consistent, frozen \d+ ms\) at checkpoint/);
    const table = (await vmdr('points', vm.name)).stdout;
    assert.match(table, /^ID +TIME +KIND +TIER +CONSISTENCY +CHECKPOINT/m);
    assert.match(table, /^rp-2 .* incremental +newest +application \(frozen \d+ ms\) +vmdr-/m);
  });

  it('a freeze that answers after the timeout is given up and thawed: the point is crash-consistent and says why', async () => {
    const vm = app!;
    await guestShell(vm.name, `echo ${FREEZE_TIMEOUT_S + 2} >/run/vmdr/freeze-delay`);
    try {
      const from = await fileSize(vm.log);
      const { line, point } = await sync(vm);
      assert.equal(point.consistency, 'crash');
      assert.equal(point.consistencyIssue!.code, 'freeze-timed-out');
      assert.match(line, new RegExp(`\\(crash-consistent, frozen \\d+ ms: freeze-timed-out: the guest agent of VM "${vm.name}" did not answer the freeze within ${FREEZE_TIMEOUT_S} s: given up, and thawed\\)`));
      // The guest froze late, after the cycle gave up; the cycle's thaw reached it. Under load the
      // cycle may ask again while the late freeze still sleeps in the hook, and each thaw runs it.
      const lines = await hookLines(vm, from);
      assert.equal(lines[0], 'freeze', lines.join(', '));
      assert.ok(lines.length >= 2 && lines.slice(1).every((l) => l === 'thaw'), lines.join(', '));
      assert.equal(await fsfreezeStatus(vm.name), 'thawed');
    } finally {
      await guestShell(vm.name, 'echo >/run/vmdr/freeze-delay');
    }
  });

  it('a thaw that never answers is given up after three times the timeout: the cycle commits, and says the guest may still be frozen', async () => {
    const vm = app!;
    const hook = 12;
    await guestShell(vm.name, `echo ${hook} >/run/vmdr/thaw-delay`);
    const started = Date.now();
    const { line, point } = await sync(vm);
    const took = Date.now() - started;
    assert.equal(point.consistency, 'application', 'the checkpoint was taken while the guest was frozen');
    assert.equal(point.consistencyIssue!.code, 'thaw-timed-out');
    assert.match(line, /\(application-consistent, frozen \d+ ms: thaw-timed-out: no thaw of VM "[^"]+" answered within [\d.]+ s \(\d+ attempts\): its filesystems may still be frozen; `virsh -c qemu:\/\/\/system domfsthaw [^`]+` thaws them/);
    assert.ok(point.freezeWindowMs! >= 3 * FREEZE_TIMEOUT_S * 1000, `gave up after ${point.freezeWindowMs} ms`);
    assert.ok(took < hook * 1000 + 20_000, `the cycle took ${took} ms`);
    // qemu-ga thaws before it runs its hook: once the hook is done it answers again, thawed.
    for (const deadline = Date.now() + 30_000; ; await sleep(500)) {
      const status = await fsfreezeStatus(vm.name).catch(() => 'not answering');
      if (status === 'thawed') break;
      assert.ok(Date.now() < deadline, `guest-fsfreeze-status: ${String(status)}`);
    }
    await guestShell(vm.name, 'echo >/run/vmdr/thaw-delay');
  });

  it("a freeze held past its deadline is thawed by serve's sweep: the holder, stalled meanwhile, commits a crash-consistent point that says so, and does not thaw again", async () => {
    const vm = app!;
    const from = await fileSize(vm.log);
    // The holder stalls right after the freeze (as a hung libvirtd would keep it), for as long as the test wants.
    const run = spawnVmdr(['sync', vm.name, '--no-daemon', '--config', config], { VMDR_FAILPOINT: 'guests-frozen:stop' });
    const pid = run.process.pid!;
    try {
      for (const deadline = Date.now() + 20_000; ; await sleep(100)) {
        if ((await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.startsWith('T')) break;
        assert.ok(Date.now() < deadline, 'the sync did not stop with the guest frozen');
      }
      assert.equal(await fsfreezeStatus(vm.name), 'frozen');
      // The freeze's deadline is twice its timeout; the daemon's sweep (every 2 s) thaws it after that.
      for (const deadline = Date.now() + FREEZE_TIMEOUT_S * 2000 + 10_000; ; await sleep(100)) {
        const e = serve!.events.find((x) => x['event'] === 'hold-released' && (x['holder'] as { pid: number }).pid === pid);
        if (e) {
          assert.deepEqual([e['vm'], e['kind'], e['action'], e['left']], [vm.name, 'freeze', 'thawed', 'deadline-passed']);
          break;
        }
        assert.ok(Date.now() < deadline, `serve did not release the overrun hold: ${JSON.stringify(serve!.events.filter((x) => String(x['event']).startsWith('hold')))}`);
      }
      assert.equal(await fsfreezeStatus(vm.name), 'thawed');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    const point = (await points(vm)).at(-1)!;
    assert.deepEqual([point.consistency, point.consistencyIssue?.code], ['crash', 'hold-broken']);
    assert.match(
      r.stdout,
      new RegExp(`\\(crash-consistent: hold-broken: the freeze of VM "${vm.name}" was held past its deadline \\(\\S+, [\\d.]+ s since it was asked\\) and vmdr process ${serve!.child.pid} thawed it: the checkpoint may have been taken after the thaw\\)`),
    );
    // One freeze, one thaw (the daemon's): the holder did not thaw what was no longer its hold.
    assert.deepEqual(await hookLines(vm, from), ['freeze', 'thaw']);
    assert.equal(await fsfreezeStatus(vm.name), 'thawed');
    // Nothing of the hold is left on the host, and the next cycle is application-consistent again.
    assert.deepEqual((await new HoldRecords('qemu:///system').list()).filter((h) => h.vm === vm.name), []);
    assert.equal((await sync(vm)).point.consistency, 'application');
  });

  it('a paused VM is not asked (its agent cannot answer): crash-consistent at once, and the cycle commits', async () => {
    const vm = app!;
    await exec('virsh', ['-c', 'qemu:///system', 'suspend', vm.name]);
    try {
      const started = Date.now();
      const { line, point } = await sync(vm);
      assert.deepEqual([point.consistency, point.consistencyIssue?.code], ['crash', 'vm-not-running']);
      assert.match(line, /\(crash-consistent: vm-not-running: VM "[^"]+" is paused: no guest runs to freeze\)/);
      assert.ok(Date.now() - started < FREEZE_TIMEOUT_S * 1000 + 5_000, 'it waited for an agent that cannot answer');
    } finally {
      await exec('virsh', ['-c', 'qemu:///system', 'resume', vm.name]);
    }
    assert.equal(await fsfreezeStatus(vm.name), 'thawed');
  });

  it('without an agent (one stopped in the guest, or no channel) the point is crash-consistent with the reason, and commits', async () => {
    const vm = app!;
    await agent(vm.name, { execute: 'guest-exec', arguments: { path: '/bin/sh', arg: ['-c', 'sleep 1; kill $(pidof qemu-ga)'] } });
    for (const deadline = Date.now() + 10_000; await agent(vm.name, { execute: 'guest-ping' }, 1).then(() => true, () => false); await sleep(200)) {
      assert.ok(Date.now() < deadline, 'qemu-ga still answers');
    }
    const stopped = await sync(vm);
    assert.deepEqual([stopped.point.consistency, stopped.point.consistencyIssue?.code], ['crash', 'agent-not-answering']);
    assert.match(stopped.line, /\(crash-consistent: agent-not-answering: the QEMU guest agent of VM "[^"]+" on qemu:\/\/\/system does not answer/);

    const r = await vmdr('protect', plain!.name);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /recovery point rp-1 \(crash-consistent: no-agent-channel: VM "[^"]+" has no QEMU guest agent channel/);
    const [point] = await points(plain!);
    assert.deepEqual([point!.consistency, point!.consistencyIssue?.code, point!.freezeWindowMs], ['crash', 'no-agent-channel', null]);
    assert.match((await vmdr('points', plain!.name)).stdout, /^rp-1 .* full +newest +crash \(no-agent-channel\) +vmdr-/m);
  });
});
