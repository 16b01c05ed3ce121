/**
 * A VM never stays paused or frozen by vmdr after vmdr dies inside its window (the real lab). Two
 * lab guests in a crash consistency group (paused together); the second, with its guest agent, is
 * also protected application-consistent (frozen for its solo cycles). The vmdr process is killed
 * (SIGKILL, by the failpoints `vms-paused` and `guests-frozen`) while it holds them. What a user
 * checks: without a daemon on the source host, the next `vmdr sync --group` resumes them first and
 * says so; with `vmdr serve` on the source host, its sweep resumes the VMs (thaws the guest, which
 * writes again) within the pause timeout and a few seconds, one `hold-released` event each, naming
 * the VM, the kind, the dead holder and how long it held. A VM a person suspended (no record) stays
 * paused; a record whose pid lives but started at another time (pid reuse) is released; a hold
 * past its deadline that cannot be released is an ALERT in `vmdr status`, and its live holder is
 * told its hold was broken (a failed release may have taken effect).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { HoldRecords, isTaken } from '../../hypervisors/libvirt/hold-records.js';
import { HOLD_SWEEP_MS } from '../../plugin/replication/left-holds.js';
import { createLabVm, bootLabVm, destroyLabVm, runVmdr, spawnVmdr, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { labProtection } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const PAUSE_TIMEOUT_MS = 5_000;

interface HoldEvent {
  event: string;
  vm: string;
  kind: string;
  holder: { pid: number; startedAt: string };
  left: string;
  action: string;
  detail?: string;
  heldMs: number;
}

const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]);

/** One guest agent command through libvirt; its `return`. */
async function agent(vm: string, command: Record<string, unknown>, timeoutS = 5): Promise<unknown> {
  const { stdout } = await virsh('qemu-agent-command', vm, JSON.stringify(command), '--timeout', String(timeoutS));
  return (JSON.parse(stdout) as { return: unknown }).return;
}

/** A shell line run in the guest by its agent (guest-exec); resolves once it exited 0, fails after `timeoutMs`. */
async function guestShell(vm: string, line: string, timeoutMs = 10_000): Promise<void> {
  const { pid } = (await agent(vm, { execute: 'guest-exec', arguments: { path: '/bin/sh', arg: ['-c', line] } })) as { pid: number };
  for (const deadline = Date.now() + timeoutMs; ; await sleep(100)) {
    const status = (await agent(vm, { execute: 'guest-exec-status', arguments: { pid } })) as { exited: boolean; exitcode?: number };
    if (status.exited) return assert.equal(status.exitcode, 0, `${line} failed in the guest`);
    assert.ok(Date.now() < deadline, `${line} did not end in the guest within ${timeoutMs} ms`);
  }
}

describe('a VM vmdr paused or froze is released when vmdr dies inside the window (qemu:///system)', function () {
  this.timeout(300_000);
  let a: LabVm | undefined;
  let b: LabVm | undefined;
  let config: string;
  let drServe: ServeProcess | undefined;
  let sourceServe: ServeProcess | undefined;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const state = (vm: LabVm) => vm.adapter.powerState(vm.name);

  /** Runs `vmdr ARGS` until the failpoint kills it (SIGKILL inside the window); its pid and when it died. */
  const killedAt = async (failpoint: string, ...args: string[]) => {
    const run = spawnVmdr([...args, '--no-daemon', '--config', config], { VMDR_FAILPOINT: failpoint });
    const r = await run.done;
    assert.equal(r.signal, 'SIGKILL', `it was not killed at ${failpoint}: ${r.stdout}${r.stderr}`);
    return { pid: run.process.pid!, at: Date.now() };
  };
  /** The source host's daemon's hold events about `vm`, waited for until one matches. */
  const holdEvent = async (vm: LabVm, match: (e: HoldEvent) => boolean, timeoutMs: number) => {
    for (const deadline = Date.now() + timeoutMs; ; await sleep(100)) {
      const found = (sourceServe!.events as unknown as HoldEvent[]).find((e) => e.vm === vm.name && match(e));
      if (found) return found;
      assert.ok(Date.now() < deadline, `no hold event of ${vm.name} within ${timeoutMs} ms: ${JSON.stringify(sourceServe!.events.filter((e) => String(e.event).startsWith('hold')))}`);
    }
  };

  before(async () => {
    [a, b] = await Promise.all([createLabVm('holda', { marker: 'holda-src', diskSize: '32M' }), createLabVm('holdb', { marker: 'holdb-src', diskSize: '32M', agent: true })]);
    await Promise.all([bootLabVm(a), bootLabVm(b)]);
    const group = `consistencyGroups:\n  - { name: app, protections: [${a.name}, ${b.name}], consistency: crash, onMemberDown: fail, pauseTimeout: ${PAUSE_TIMEOUT_MS / 1000}s }\n`;
    const app = ['consistency: application', 'freezeTimeout: 2s'];
    config = await writeOneHostConfig(a, labProtection(a, { network: a.network }) + labProtection(b, { network: a.network, settings: app }) + group);
    // The DR site's daemon only: the source host has none until the test starts it.
    drServe = await startServe(config, { args: ['--site', 'dr', '--no-replicate'] });
    for (const vm of [a, b]) {
      const r = await vmdr('protect', vm.name);
      assert.equal(r.code, 0, r.stderr);
    }
  });

  after(async () => {
    await sourceServe?.stop();
    await drServe?.stop();
    // Records a failed test left: the VMs they name are going.
    for (const hold of await new HoldRecords(URI).list()) if (hold.vm === a?.name || hold.vm === b?.name) await rm(hold.file, { force: true });
    await destroyLabVm(b);
    await destroyLabVm(a);
  });

  it('no daemon on the source host: a group sync killed while its members are paused leaves them paused; the next sync --group resumes them first, says so, and commits', async () => {
    const killed = await killedAt('vms-paused', 'sync', '--group', 'app');
    assert.deepEqual([await state(a!), await state(b!)], ['paused', 'paused']);
    const r = await vmdr('sync', '--group', 'app');
    assert.equal(r.code, 0, r.stderr);
    for (const vm of [a!, b!]) {
      assert.match(r.stdout, new RegExp(`^group app: warning: ALERT: VM "${vm.name}" was left paused by vmdr process ${killed.pid} \\(started [^)]+\\), which is gone: resumed after \\d+\\.\\d s$`, 'm'));
    }
    assert.match(r.stdout, /^group app: group point app@\d+ \(crash-consistent, members paused \d+ ms\)/m);
    assert.deepEqual([await state(a!), await state(b!)], ['running', 'running']);
  });

  it('vmdr serve on the source host: a group sync killed inside its window; the daemon resumes both within the pause timeout and a few seconds, one hold-released event each', async () => {
    sourceServe = await startServe(config, { args: ['--site', 'prod', '--no-receive', '--no-replicate'] });
    const killed = await killedAt('vms-paused', 'sync', '--group', 'app');
    for (const vm of [a!, b!]) {
      const e = await holdEvent(vm, (x) => x.event === 'hold-released' && x.holder.pid === killed.pid, PAUSE_TIMEOUT_MS + 5_000);
      assert.deepEqual([e.kind, e.action, e.left], ['pause', 'resumed', 'holder-gone']);
      assert.ok(e.heldMs > 0 && e.heldMs < PAUSE_TIMEOUT_MS + 5_000, `held ${e.heldMs} ms`);
      assert.equal(await state(vm), 'running');
    }
    const tookMs = Date.now() - killed.at;
    console.log(`      both members running again ${tookMs} ms after the kill`);
    assert.ok(tookMs < PAUSE_TIMEOUT_MS + 5_000, `released ${tookMs} ms after the kill`);
    const lines = sourceServe.events.filter((e) => e.event === 'hold-released');
    assert.equal(lines.length, 2, JSON.stringify(lines));
  });

  it("a group sync that overruns its pause's deadline (stalled inside its window): the daemon resumes both; the cycle commits no group point, names each member and why, and exits 1", async () => {
    const run = spawnVmdr(['sync', '--group', 'app', '--no-daemon', '--config', config], { VMDR_FAILPOINT: 'vms-paused:stop' });
    const pid = run.process.pid!;
    try {
      for (const deadline = Date.now() + 30_000; ; await sleep(100)) {
        if ((await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.startsWith('T')) break;
        assert.ok(Date.now() < deadline, 'the group sync did not stop with its members paused');
      }
      assert.deepEqual([await state(a!), await state(b!)], ['paused', 'paused']);
      // The pause's deadline is twice the pause timeout; the daemon's sweep resumes them after it.
      for (const vm of [a!, b!]) {
        const e = await holdEvent(vm, (x) => x.event === 'hold-released' && x.holder.pid === pid, 2 * PAUSE_TIMEOUT_MS + 10_000);
        assert.deepEqual([e.kind, e.action, e.left], ['pause', 'resumed', 'deadline-passed']);
        assert.ok(e.heldMs >= 2 * PAUSE_TIMEOUT_MS, `released after ${e.heldMs} ms`);
      }
      assert.deepEqual([await state(a!), await state(b!)], ['running', 'running']);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const r = await run.done;
    assert.equal(r.code, 1, r.stdout);
    const why = (vm: LabVm) =>
      `member "${vm.name}" failed \\(consistency group "app": member "${vm.name}" not captured at the group's instant: the pause of VM "${vm.name}" was held past its deadline \\(\\S+, [\\d.]+ s\\) and vmdr process ${sourceServe!.child.pid} resumed it: its checkpoint may have been taken after that\\)`;
    assert.match(r.stderr.trim(), new RegExp(`consistency group "app": no group point: ${why(a!)}; ${why(b!)}`));
    // The holder resumed nothing of its own, and nothing of the holds is left.
    assert.deepEqual([await state(a!), await state(b!)], ['running', 'running']);
    assert.deepEqual((await new HoldRecords(URI).list()).filter((h) => h.vm === a!.name || h.vm === b!.name), []);
  });

  it('an application-consistent sync killed while the guest is frozen: the daemon thaws it, and the guest writes again', async () => {
    const killed = await killedAt('guests-frozen', 'sync', b!.name);
    const e = await holdEvent(b!, (x) => x.holder.pid === killed.pid, 10_000);
    assert.deepEqual([e.event, e.kind, e.action, e.left], ['hold-released', 'freeze', 'thawed', 'holder-gone']);
    assert.equal(await agent(b!.name, { execute: 'guest-fsfreeze-status' }), 'thawed');
    // A write to the guest's root filesystem (the one the agent froze) completes.
    await guestShell(b!.name, 'echo written-after-release >/root/after-release && sync');
  });

  it('a VM a person suspended (no record) stays paused; a record whose pid lives but started at another time (pid reuse) is released', async () => {
    await virsh('suspend', a!.name);
    await virsh('suspend', b!.name);
    try {
      // A hold of b recorded by this very process (alive), as if its pid were another process's now.
      const records = new HoldRecords(URI);
      await records.record(b!.name, 'pause', 60_000);
      const hold = (await records.list()).find((h) => h.vm === b!.name && h.holder.pid === process.pid)!;
      await writeFile(hold.file, JSON.stringify({ ...(JSON.parse(await readFile(hold.file, 'utf8')) as object), pidStart: '1' }));
      const e = await holdEvent(b!, (x) => x.holder.pid === process.pid, 10_000);
      assert.deepEqual([e.event, e.kind, e.action, e.left], ['hold-released', 'pause', 'resumed', 'holder-gone']);
      assert.equal(await state(b!), 'running');
      // Two more sweeps: a's pause is a person's.
      await sleep(2 * HOLD_SWEEP_MS + 500);
      assert.equal(await state(a!), 'paused');
    } finally {
      await virsh('resume', a!.name).catch(() => undefined);
      await virsh('resume', b!.name).catch(() => undefined);
    }
  });

  it('a hold past its deadline that cannot be released (a frozen guest whose VM is paused) is an ALERT in vmdr status until it is; its holder, claiming meanwhile, is told the daemon tried', async () => {
    await virsh('suspend', b!.name);
    let resumed = false;
    try {
      // The holder lives (this process) but overran its deadline.
      const recorded = await new HoldRecords(URI).record(b!.name, 'freeze', 1);
      const failed = await holdEvent(b!, (x) => x.event === 'hold-release-failed', 10_000);
      assert.deepEqual([failed.kind, failed.action, failed.left], ['freeze', 'failed', 'deadline-passed']);
      assert.equal(failed.detail, `VM "${b!.name}" is paused: its guest agent cannot thaw it until it runs`);
      // A failed release may have taken effect (a thaw that timed out): the holder's hold is broken all
      // the same. Between two sweeps it is told so by the mark; during one, by the sweep's claim.
      for (let i = 0; ; i++) {
        const own = await recorded.claim();
        assert.ok(isTaken(own), 'the holder was not told the daemon tried to release its hold');
        assert.equal(own.by, sourceServe!.child.pid);
        if (own.failed) break;
        assert.ok(i < 3, 'the holder found the sweep claiming each time it asked');
        await sleep(200);
      }
      const status = await vmdr('status');
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, new RegExp(`^ALERT: VM "${b!.name}" \\(site prod\\) has been frozen by vmdr since \\S+, \\d+ s past its deadline; holder: vmdr process ${process.pid}: `, 'm'));
      await virsh('resume', b!.name);
      resumed = true;
      // Running again, its agent says thawed: nothing was held any more, and the record goes.
      const cleared = await holdEvent(b!, (x) => x.event === 'hold-released' && x.kind === 'freeze' && x.left === 'deadline-passed', 15_000);
      assert.equal(cleared.action, 'none');
      assert.doesNotMatch((await vmdr('status')).stdout, /^ALERT: VM/m);
    } finally {
      if (!resumed) await virsh('resume', b!.name).catch(() => undefined);
    }
  });
});
