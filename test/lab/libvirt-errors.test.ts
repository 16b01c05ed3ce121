/**
 * The libvirt adapter's failures on this host's real libvirtd (qemu:///system): the table of error
 * cases (test/helpers/adapter-error-cases.ts, also run on the test driver); a checkpoint whose
 * bitmap QEMU lost; libvirtd restarted
 * between two calls and stopped during one; and libvirtd frozen (SIGSTOP) so that a call never
 * returns: it fails after the site's call timeout naming the call and the VM, and the adapter
 * works again once libvirtd does, also after a freeze longer than libvirt's keepalive would have
 * waited (it is off: docs/libvirt.md, "a frozen libvirtd").
 *
 * Run under the lab lock (it stops and freezes libvirtd); libvirtd runs again when the suite ends,
 * whatever happened. The one VM it runs boots no OS (its kernel finds no init and waits), on no
 * network.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { VmdrError, type HypervisorAdapter, type VmSpec } from '../../hypervisors/types.js';
import { describeErrorCases, type ErrorCaseFixture } from '../helpers/adapter-error-cases.js';
import { rejectsWith } from '../helpers/assertions.js';
import { labBoot, labScratchDir } from '../helpers/lab.js';
import { ensureLibvirtd, isStopped, libvirtdPid, startLibvirtd, stopLibvirtd, until } from '../helpers/libvirtd.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
/** Longer than libvirt's keepalive (5 s × 3, when vmdr had it on) took to give a silent libvirtd up. */
const LONG_FREEZE_MS = 25_000;

/** How long `fn` took; it must settle. */
async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const start = Date.now();
  const result = await fn();
  return { ms: Date.now() - start, result };
}

describe('libvirt adapter errors on qemu:///system', function () {
  this.timeout(120_000);
  const made = new Set<string>();
  let adapter: HypervisorAdapter;
  let dir: string;
  let running: string;
  let fixture: ErrorCaseFixture;

  before(async () => {
    // A run that died frozen or stopped left libvirtd so: this suite needs it answering.
    await ensureLibvirtd();
    dir = await labScratchDir('libvirt-errors');
    const disk = join(dir, 'vda.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
    const spec = (overrides: Partial<VmSpec> = {}): VmSpec => {
      const name = `test-vmdr-errors-${randomBytes(3).toString('hex')}`;
      made.add(name);
      return {
        name,
        memoryMiB: 128,
        vcpus: 1,
        // No init to run: the kernel stops there and the VM stays running, quietly.
        boot: labBoot('console=ttyS0 quiet rdinit=/no-init root=/dev/no-root panic=0'),
        disks: [{ path: disk, format: 'qcow2' }],
        nics: [],
        serialLog: join(dir, 'console.log'),
        ...overrides,
      };
    };
    adapter = openAdapter(URI);
    const vm = spec();
    await adapter.defineVm(vm);
    await adapter.start(vm.name);
    running = vm.name;
    fixture = {
      adapter,
      running,
      spec,
      template: async (name, xml) => {
        await writeFile(join(dir, name), xml);
        return join(dir, name);
      },
    };
  });

  after(async () => {
    await ensureLibvirtd();
    const problems: string[] = [];
    for (const name of made) {
      await adapter
        .stop(name, { mode: 'force' })
        .then(() => adapter.undefine(name))
        .catch((err: unknown) => {
          if (!(err instanceof VmdrError && err.code === 'VM_NOT_FOUND')) problems.push(`${name}: ${(err as Error).message}`);
        });
    }
    await adapter?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
    assert.deepEqual(problems, [], 'clean-up failed');
  });

  describeErrorCases('qemu', () => fixture);

  it('a checkpoint whose bitmap QEMU lost (killed): CHECKPOINT_BITMAP_BROKEN keeping libvirt\'s 109, and the checkpoint can still be deleted', async () => {
    const tracker = adapter.changeTracker!;
    const listen = async () => ({ transport: 'tcp' as const, host: '127.0.0.1', port: await freeLoopbackPort() });
    const session = await tracker.beginBackup(running, { checkpoint: 'vmdr-errors-1', listen: await listen() });
    await session.end();
    // Killed, QEMU never writes the bitmap it kept in memory into the image.
    process.kill(Number((await readFile(`/run/libvirt/qemu/${running}.pid`, 'utf8')).trim()), 'SIGKILL');
    await until('QEMU to be gone', async () => (await adapter.powerState(running)) === 'shutoff', 10_000);
    await adapter.start(running);
    const err = await rejectsWith(tracker.beginBackup(running, { checkpoint: 'vmdr-errors-2', since: 'vmdr-errors-1', listen: await listen() }), 'CHECKPOINT_BITMAP_BROKEN');
    assert.equal(err.subject.checkpoint, 'vmdr-errors-1');
    assert.deepEqual(err.toJSON().libvirt, { code: 109 /* VIR_ERR_CHECKPOINT_INCONSISTENT */, domain: 10 /* VIR_FROM_QEMU */ });
    // libvirt refuses to delete it (VIR_ERR_INTERNAL_ERROR: "bitmap not found in backing chain"); vmdr removes its metadata.
    await tracker.deleteCheckpoint(running, 'vmdr-errors-1');
    assert.deepEqual(await tracker.checkpointNames(running), []);
  });

  it('works again after libvirtd restarted between two calls; a call while it is gone fails at once, typed', async () => {
    const other = openAdapter(URI);
    try {
      assert.equal(await other.powerState(running), 'running');
      await stopLibvirtd('SIGTERM');
      await startLibvirtd();
      // A change first: its request never reached the closed connection, so it is sent on a new one.
      await other.setAutostart(running, false);
      assert.equal(await other.powerState(running), 'running');

      // Gone for good this time (killed, as a crash or an OOM kill ends it).
      await stopLibvirtd('SIGKILL');
      try {
        const { ms, result: err } = await timed(() => rejectsWith(other.getVm(running), 'HYPERVISOR_UNREACHABLE'));
        assert.ok(ms < 5_000, `failed within 5 s, not ${ms} ms`);
        assert.equal(err.subject.host, URI);
        assert.ok(err.remedy, 'says what to check');
        assert.deepEqual(err.toJSON().libvirt, { code: 38 /* VIR_ERR_SYSTEM_ERROR */, domain: 7 /* VIR_FROM_RPC */ });
      } finally {
        await startLibvirtd();
      }
      assert.equal((await other.getVm(running)).name, running);
    } finally {
      await other.close();
    }
  });

  it('a group\'s starts on connections opened ahead of them: all start, also when libvirtd restarted in between', async () => {
    const group = openAdapter(URI);
    try {
      const vms: string[] = [];
      for (let i = 0; i < 3; i++) {
        const disk = join(dir, `group-${i}.qcow2`);
        await exec('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '16M']);
        const vm = fixture.spec({ disks: [{ path: disk, format: 'qcow2' }], serialLog: join(dir, `group-${i}.log`) });
        await group.defineVm(vm);
        vms.push(vm.name);
      }
      // Three at once, announced: each on a connection of its own, opened now, ahead.
      group.expectParallel?.(3);
      await new Promise((r) => setTimeout(r, 500));
      await stopLibvirtd('SIGTERM');
      await startLibvirtd();
      await Promise.all(vms.map((vm) => group.start(vm)));
      assert.deepEqual(await Promise.all(vms.map((vm) => group.powerState(vm))), ['running', 'running', 'running']);
      for (const vm of vms) await group.stop(vm, { mode: 'force' });
      // And without a restart, the connections opened ahead serve the starts.
      group.expectParallel?.(3);
      await Promise.all(vms.map((vm) => group.start(vm)));
      assert.deepEqual(await Promise.all(vms.map((vm) => group.powerState(vm))), ['running', 'running', 'running']);
    } finally {
      await group.close();
    }
  });

  it('gives a call libvirtd never answers up after the site\'s call timeout, naming the call and the VM; works again after', async () => {
    const frozen = openAdapter(URI, { callTimeoutMs: 2_000 });
    const pid = await libvirtdPid();
    assert.ok(pid, 'libvirtd is running');
    try {
      await frozen.connect();
      process.kill(pid, 'SIGSTOP');
      const { ms, result: err } = await timed(() => rejectsWith(frozen.getVm(running), 'HYPERVISOR_TIMED_OUT'));
      assert.ok(ms >= 1_900 && ms < 4_000, `gave up after the 2 s timeout, not ${ms} ms`);
      assert.equal(err.subject.vm, running);
      assert.equal(err.subject.host, URI);
      assert.match(err.message, new RegExp(`^read VM definition \\(describeDomain\\) VM "${running}" on qemu:///system: no answer within 2 s$`));
      process.kill(pid, 'SIGCONT');
      assert.equal(await frozen.powerState(running), 'running');

      // Frozen for long: calls meanwhile still end in time, on the connection or on a fresh one.
      process.kill(pid, 'SIGSTOP');
      const frozenAt = Date.now();
      await rejectsWith(frozen.start(running), 'HYPERVISOR_TIMED_OUT');
      await new Promise((r) => setTimeout(r, LONG_FREEZE_MS - (Date.now() - frozenAt)));
      const late = await timed(() => frozen.powerState(running).then(() => undefined, (e: unknown) => e));
      assert.ok(late.ms < 4_000, `a call to a libvirtd frozen for ${LONG_FREEZE_MS / 1000} s ended within 4 s, not ${late.ms} ms`);
      // On a new connection libvirtd does not answer: the same error, naming the VM.
      assert.ok(late.result instanceof VmdrError && late.result.code === 'HYPERVISOR_TIMED_OUT', `timed out: ${String(late.result)}`);
      assert.equal(late.result.subject.vm, running);
      process.kill(pid, 'SIGCONT');
      const back = await timed(() => frozen.powerState(running));
      assert.equal(back.result, 'running');
      assert.ok(back.ms < 5_000, `answered within 5 s of SIGCONT, not ${back.ms} ms`);
    } finally {
      if (await isStopped(pid)) process.kill(pid, 'SIGCONT');
      await frozen.close();
    }
  });
});
