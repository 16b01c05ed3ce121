/**
 * A pull backup job outlives both a restart of libvirtd (as a libvirt upgrade does it) and the
 * death of the vmdr process that began it, and until it is aborted no new backup of that VM can
 * begin. Here libvirtd is restarted while a replication loop's backup job runs, three times, and a
 * `vmdr sync` is killed with its job running: each time the next cycle ends the job vmdr left,
 * starts from the checkpoint the replica acknowledged, and commits the writes made afterwards,
 * with no domjobabort by hand. A job vmdr must not end is refused in one line.
 *
 * The moment is exact: VMDR_FAILPOINT=sync-backup-running:stop makes the sender stop itself
 * (SIGSTOP) once its backup job runs and before it ships; the test restarts libvirtd, then
 * continues it. libvirtd is up again (and vmdr's hook installed) when the suite ends, whatever
 * happened.
 *
 * The faults of a single `vmdr sync` line up the same way: libvirtd killed (as a crash does it)
 * inside the cycle before its backup begins fails it in one line and commits nothing; killed while
 * the cycle ships it does not fail it (QEMU, not libvirtd, serves the backup's data); either way
 * the next sync once libvirtd is back is incremental. The VM undefined while its cycle ships runs on
 * (transient) and stays protected; destroyed while a cycle ships, that cycle fails in one line
 * naming the VM, the next says it does not exist, and the replica keeps its points.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { access, readdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { createLabVm, destroyLabVm, runVmdr, type LabVm, writeOneHostConfig, bootLabVm } from '../helpers/lab.js';
import { labProtection } from '../helpers/protected-vm.js';
import { assertPattern, compareImages, hmpWrite } from '../helpers/patterns.js';
import { isStopped, libvirtdPid, startLibvirtd, stopLibvirtd, until } from '../helpers/libvirtd.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'scripts', 'vmdr.js');
const MiB = 1024 * 1024;
const STOP_AT_BACKUP = { VMDR_FAILPOINT: 'sync-backup-running:stop' };
/** A `vmdr sync` stopped at a failpoint is continued and must end within this. */
const SYNC_BOUND_MS = 90_000;
/** From libvirtd answering again to a committed point holding a write made after that. */
const RECOVERY_BOUND_MS = 30_000;

interface Point {
  id: string;
  checkpoint: string;
  disks: { disk: string; image: string }[];
}
interface SyncResult {
  kind: string;
  since: string | null;
  checkpoint: string;
  bytesCovered: number;
  warnings: string[];
  point: Point;
}
interface Event {
  event: string;
  result?: SyncResult;
  error?: string;
  code?: string;
}

const virsh = async (...args: string[]) => (await exec('virsh', ['-c', 'qemu:///system', ...args])).stdout;
const jobOf = (vm: string) => virsh('domjobinfo', vm);
const checkpointsOn = async (vm: string) => (await virsh('checkpoint-list', vm, '--name')).trim().split('\n').filter(Boolean);

describe('a backup job left behind by a libvirtd restart or a killed sync is ended by the next cycle (qemu:///system)', function () {
  this.timeout(300_000);
  let vm: LabVm;
  let config: string;
  let receiver: ServeProcess | undefined;
  let loops: ServeProcess | undefined;

  before(async () => {
    vm = await createLabVm('restart', { marker: 'restart', diskSize: '32M' });
    await bootLabVm(vm);
    config = await writeOneHostConfig(vm, labProtection(vm, { network: vm.network, settings: ['continuous: true', 'retention: { keep: 100 }'] }));
    receiver = await startServe(config, { args: ['--no-replicate', '--site', 'dr'] });
  });

  afterEach(async () => {
    // Whatever failed: libvirtd up for everyone else, and no loop left stopped with a job running.
    if (!(await libvirtdPid())) await startLibvirtd();
    await stopLoops(loops);
    loops = undefined;
  });

  after(async () => {
    await receiver?.stop();
    await virsh('domjobabort', vm.name).catch(() => undefined);
    await destroyLabVm(vm);
  });

  /** SIGTERM, and SIGCONT for as long as it stops itself at the failpoint on its way out. */
  async function stopLoops(serve: ServeProcess | undefined): Promise<void> {
    if (!serve || serve.child.exitCode !== null || serve.child.signalCode !== null) return;
    const pid = serve.child.pid!;
    serve.child.kill('SIGTERM');
    let done = false;
    void serve.exited.then(() => (done = true));
    while (!done) {
      if (await isStopped(pid)) process.kill(pid, 'SIGCONT');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const sync = async (env: Record<string, string> = {}): Promise<SyncResult> => {
    const r = await runVmdr(['sync', vm.name, '--json', '--config', config], env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as SyncResult;
  };

  const pointsOf = async (): Promise<Point[]> => {
    const r = await runVmdr(['points', vm.name, '--json', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Point[];
  };

  /**
   * Runs `work` with the guest paused: its mounted filesystem writes on its own (ext4 superblock and
   * journal updates after the raw writes under its feet), and a write between a sync's checkpoint
   * and the comparison of the live disk with the point would be a difference vmdr did not cause.
   */
  const pausedGuest = async (work: () => Promise<void>) => {
    await virsh('suspend', vm.name);
    try {
      await work();
    } finally {
      await virsh('resume', vm.name);
    }
  };

  /** Guest writes QEMU still holds in its qcow2 caches reach the image file, for qemu-img to compare. */
  const flushSource = () => virsh('qemu-monitor-command', vm.name, '--hmp', 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "flush"');

  /**
   * `vmdr sync ARGS` stopped at `failpoint` (SIGSTOP) while `meanwhile` happens to the host, then
   * continued: its exit code and output. Bounded: killed if it has not ended SYNC_BOUND_MS later.
   */
  async function syncAcross(failpoint: string, meanwhile: () => Promise<unknown>, args: string[] = []) {
    const child = spawn(process.execPath, [CLI, 'sync', vm.name, ...args, '--config', config], {
      env: { ...process.env, VMDR_FAILPOINT: `${failpoint}:stop` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    const running = () => child.exitCode === null && child.signalCode === null;
    try {
      await until(`the sync to stop at ${failpoint}`, async () => !running() || (await isStopped(child.pid!)), 60_000);
      assert.ok(running(), `the sync ended before ${failpoint}: ${stderr}`);
      await meanwhile();
    } finally {
      if (running()) process.kill(child.pid!, 'SIGCONT');
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), SYNC_BOUND_MS);
    const code = await exited.finally(() => clearTimeout(timer));
    assert.notEqual(code, null, `the sync did not end within ${SYNC_BOUND_MS / 1000} s of libvirtd's fault: ${stderr}`);
    return { code: code!, stdout, stderr };
  }

  it('libvirtd killed inside a `vmdr sync` before its backup begins: one line naming VM and host, nothing committed; once back, the next sync is incremental and the replica matches the source', async () => {
    const last = await sync();
    const before = await pointsOf();
    await hmpWrite(vm.name, 0, '0x71', 12 * MiB, MiB);

    const failed = await syncAcross('sync-before-backup', () => stopLibvirtd('SIGKILL'));
    await startLibvirtd();
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(
      failed.stderr,
      new RegExp(`^vmdr: cannot reach hypervisor qemu:///system for VM "${vm.name}" \\([A-Za-z ]+\\): Failed to connect socket to '/var/run/libvirt/libvirt-sock': Connection refused \\(is libvirtd running\\? [^\\n]*\\)\\n$`),
    );
    assert.deepEqual(await pointsOf(), before, 'no new recovery point');
    await assert.rejects(assertPattern(before.at(-1)!.disks[0]!.image, '0x71', 12 * MiB, MiB), 'the replica is at its last committed point');

    // The guest's own filesystem writes nothing between the point and the comparison.
    await pausedGuest(async () => {
      const next = await sync();
      assert.equal(next.kind, 'incremental');
      assert.equal(next.since, last.checkpoint);
      // What changed is the 1 MiB written (in 64 KiB bitmap granules), not the 32 MiB disk.
      assert.ok(next.bytesCovered >= MiB && next.bytesCovered <= 2 * MiB, `${next.bytesCovered} bytes covered`);
      await flushSource();
      await compareImages(vm.disk, next.point.disks[0]!.image);
    });
  });

  it('libvirtd killed while a `vmdr sync` ships: the point QEMU captured commits (the job that could not end is a warning); once back, the next sync ends that job and is incremental', async () => {
    const last = await sync();
    await hmpWrite(vm.name, 0, '0x72', 13 * MiB, MiB);

    const shipped = await syncAcross('sync-backup-running', () => stopLibvirtd('SIGKILL'), ['--json']);
    await startLibvirtd();
    assert.equal(shipped.code, 0, shipped.stderr);
    const r = JSON.parse(shipped.stdout.trim().split('\n').pop()!) as SyncResult;
    assert.equal(r.kind, 'incremental');
    assert.equal(r.since, last.checkpoint);
    await assertPattern(r.point.disks[0]!.image, '0x72', 13 * MiB, MiB);
    assert.equal(shipped.stderr, '', 'nothing on stderr: libvirt prints nothing of its own');
    assert.ok(r.warnings.some((w) => /^the backup job on VM ".*" did not end \(.*\); the next cycle ends it first$/.test(w)), JSON.stringify(r.warnings));

    await hmpWrite(vm.name, 0, '0x73', 14 * MiB, MiB);
    await pausedGuest(async () => {
      const next = await sync();
      assert.equal(next.kind, 'incremental');
      assert.equal(next.since, r.checkpoint);
      assert.ok(next.warnings.some((w) => /^ended the pull backup \(NBD 127\.0\.0\.1:\d+, disks vda\) left on VM ".*" by vmdr process \d+ \(no longer running\)$/.test(w)), JSON.stringify(next.warnings));
      assert.ok(next.bytesCovered >= MiB && next.bytesCovered <= 2 * MiB, `${next.bytesCovered} bytes covered`);
      await flushSource();
      await compareImages(vm.disk, next.point.disks[0]!.image);
    });
  });

  it('the VM undefined while its protection syncs: that cycle commits, the next is incremental; destroyed while one ships: one line naming the VM, nothing committed; the next sync fails with VM_NOT_FOUND and the replica keeps its points', async () => {
    const inactiveXml = join(vm.dir, 'restore.xml');
    await writeFile(inactiveXml, await virsh('dumpxml', '--inactive', vm.name));
    try {
      const last = await sync();
      await hmpWrite(vm.name, 0, '0x74', 15 * MiB, MiB);
      const undefined_ = await syncAcross('sync-backup-running', () => virsh('undefine', vm.name), ['--json']);
      assert.equal(undefined_.code, 0, undefined_.stderr);
      assert.match(await virsh('dominfo', vm.name), /Persistent:\s+no/, 'the VM runs on, transient');
      const r = JSON.parse(undefined_.stdout.trim().split('\n').pop()!) as SyncResult;
      assert.equal(r.since, last.checkpoint);
      await assertPattern(r.point.disks[0]!.image, '0x74', 15 * MiB, MiB);
      // Transient, it is still the protected VM: its checkpoints went nowhere, the next cycle is incremental.
      await hmpWrite(vm.name, 0, '0x75', 16 * MiB, MiB);
      const transient = await sync();
      assert.equal(transient.kind, 'incremental');
      assert.equal(transient.since, r.checkpoint);
      await assertPattern(transient.point.disks[0]!.image, '0x75', 16 * MiB, MiB);
      const kept = await pointsOf();
      assert.equal(kept.at(-1)!.id, transient.point.id);

      // Destroyed while a cycle ships (transient, it is gone then): QEMU's export closes under the cycle.
      await hmpWrite(vm.name, 0, '0x76', 17 * MiB, MiB);
      const destroyed = await syncAcross('sync-backup-running', () => virsh('destroy', vm.name));
      assert.equal(destroyed.code, 1, destroyed.stderr);
      assert.equal(destroyed.stderr, `vmdr: the backup export of VM "${vm.name}" on qemu:///system failed while the cycle shipped: the VM no longer exists; nothing was committed\n`);
      assert.deepEqual(await pointsOf(), kept, 'nothing committed');

      const gone = await runVmdr(['sync', vm.name, '--config', config]);
      assert.equal(gone.code, 1, gone.stderr);
      assert.match(gone.stderr, new RegExp(`^vmdr: VM "${vm.name}" does not exist on qemu:///system[^\\n]*\\n$`));
      const goneJson = await runVmdr(['sync', vm.name, '--json', '--config', config]);
      assert.equal(goneJson.code, 1);
      assert.equal((JSON.parse(goneJson.stderr) as { error: { code: string } }).error.code, 'VM_NOT_FOUND');
      assert.deepEqual(await pointsOf(), kept, 'the replica keeps its points');
    } finally {
      // The VM as the suite made it: defined, running, its guest up.
      if (!(await virsh('list', '--all', '--name')).split('\n').includes(vm.name)) await virsh('define', inactiveXml);
      if (!(await virsh('list', '--name')).split('\n').includes(vm.name)) await bootLabVm(vm);
    }
  });

  it('libvirtd restarted inside a running backup job, three times: the loop ends the job it left and commits the writes made after each restart', async () => {
    loops = await startServe(config, { args: ['--no-receive', '--site', 'prod'], env: STOP_AT_BACKUP });
    const serve = loops;
    const pid = serve.child.pid!;
    const events = () => serve.events as unknown as Event[];
    const committedSince = (mark: number) => events().slice(mark).filter((e) => e.event === 'cycle' && e.result);
    // Once a round has done its restart the loop runs freely: every stop at the failpoint is
    // continued. The bound: a backup-begin stuck behind the old job alone waits 30 s.
    const runFreelyUntil = async (what: string, ok: () => Promise<boolean>) =>
      until(what, async () => {
        if (await isStopped(pid)) process.kill(pid, 'SIGCONT');
        return ok();
      }, RECOVERY_BOUND_MS);

    const rounds = [
      { signal: 'SIGTERM', downWhenTheCycleEnds: true },
      { signal: 'SIGTERM', downWhenTheCycleEnds: false },
      { signal: 'SIGKILL', downWhenTheCycleEnds: true },
    ] as const;
    const recoveryMs: number[] = [];
    for (const [i, round] of rounds.entries()) {
      const label = `round ${i + 1} (${round.signal}, libvirtd ${round.downWhenTheCycleEnds ? 'down' : 'back'} when the cycle ends its job)`;
      await until(`${label}: the loop inside a cycle, its backup job running`, () => isStopped(pid));
      assert.match(await jobOf(vm.name), /Operation:\s+Backup/, label);
      const mark = events().length;
      await stopLibvirtd(round.signal);
      if (round.downWhenTheCycleEnds) {
        process.kill(pid, 'SIGCONT');
        // The cycle ships and commits; ending its job cannot reach libvirtd, and it says so.
        await until(`${label}: the cycle to commit`, async () => committedSince(mark).length > 0, 60_000);
        const { result } = committedSince(mark)[0]!;
        assert.ok(result!.warnings.some((w) => /^the backup job on VM ".*" did not end \(.*\); the next cycle ends it first$/.test(w)), `${label}: ${JSON.stringify(result!.warnings)}`);
        await startLibvirtd();
      } else {
        // libvirt keeps the job across its restart; the cycle ends it as usual.
        await startLibvirtd();
        assert.match(await jobOf(vm.name), /Operation:\s+Backup/, `${label}: the job survived the restart`);
        process.kill(pid, 'SIGCONT');
      }
      const up = Date.now();
      const pattern = `0x${(0x51 + i).toString(16)}`;
      await hmpWrite(vm.name, 0, pattern, (4 + i) * MiB, 64 * 1024);
      const afterWrite = events().length;
      let holding: Point | undefined;
      await runFreelyUntil(`${label}: a recovery point holding ${pattern}, written after the restart`, async () => {
        const newest = committedSince(afterWrite).pop()?.result?.point;
        if (newest && (await assertPattern(newest.disks[0]!.image, pattern, (4 + i) * MiB, 64 * 1024).then(() => true, () => false))) holding = newest;
        return holding !== undefined;
      });
      recoveryMs.push(Date.now() - up);
      if (round.downWhenTheCycleEnds) {
        const ended = committedSince(mark).flatMap((e) => e.result!.warnings).filter((w) => /^ended the pull backup \(NBD 127\.0\.0\.1:\d+, disks vda\) left on VM ".*" by an earlier cycle of this process \(its end failed\)$/.test(w));
        assert.equal(ended.length, 1, `${label}: the next cycle ended the job: ${JSON.stringify(events().slice(mark).map((e) => e.error ?? e.result?.warnings ?? e.event))}`);
      }
    }
    console.log(`      recovery after libvirtd was up: ${recoveryMs.map((ms) => `${(ms / 1000).toFixed(1)} s`).join(', ')}`);
    await stopLoops(serve);
    // The only failed cycles are those that found libvirtd down: none waited on the job vmdr left
    // ("cannot acquire state change lock"), none tripped over the connection libvirtd had closed.
    const errors = events().filter((e) => e.error);
    const unexpected = errors.filter((e) => e.code !== 'HYPERVISOR_UNREACHABLE');
    assert.deepEqual(unexpected, [], JSON.stringify(errors));
    assert.ok(recoveryMs.every((ms) => ms < RECOVERY_BOUND_MS), `${recoveryMs}`);

    // Nothing accumulated on the VM: one cycle later its only checkpoint is the replica's, and no job runs.
    const last = await sync();
    assert.deepEqual(await checkpointsOn(vm.name), [last.checkpoint]);
    assert.match(await jobOf(vm.name), /Job type:\s+None/);
  });

  it('a `vmdr sync` killed (kill -9) with its backup job running: the next sync ends the job, starts from the acknowledged checkpoint, leaves no checkpoint behind', async () => {
    const acknowledged = await sync();
    await hmpWrite(vm.name, 0, '0x61', 10 * MiB, 64 * 1024);
    const killed = await runVmdr(['sync', vm.name, '--config', config], { VMDR_FAILPOINT: 'sync-backup-running' });
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    assert.match(await jobOf(vm.name), /Operation:\s+Backup/, 'the killed sync left its backup job');
    assert.equal((await checkpointsOn(vm.name)).length, 2, 'and the checkpoint it began');
    // The scratch file's name carries the process that began the job.
    const [, scratch, pid] = /<scratch file='([^']+\.vmdr-(\d+)\.scratch)'/.exec(await virsh('backup-dumpxml', vm.name)) ?? [];
    assert.ok(scratch && pid, 'a scratch file marked with its process');
    await hmpWrite(vm.name, 0, '0x62', 11 * MiB, 64 * 1024);

    const r = await sync();
    assert.equal(r.kind, 'incremental');
    assert.equal(r.since, acknowledged.checkpoint, 'repeated from the checkpoint the replica acknowledged');
    assert.ok(
      r.warnings.some((w) => new RegExp(`^ended the pull backup \\(NBD 127\\.0\\.0\\.1:\\d+, disks vda\\) left on VM ".*" by vmdr process ${pid} \\(no longer running\\)$`).test(w)),
      JSON.stringify(r.warnings),
    );
    await assertPattern(r.point.disks[0]!.image, '0x61', 10 * MiB, 64 * 1024);
    await assertPattern(r.point.disks[0]!.image, '0x62', 11 * MiB, 64 * 1024);
    assert.deepEqual(await checkpointsOn(vm.name), [r.checkpoint], 'the killed cycle\'s checkpoint is gone');
    assert.match(await jobOf(vm.name), /Job type:\s+None/);
    await assert.rejects(access(dirname(scratch)), `the killed sync's scratch directory ${dirname(scratch)} is removed`);
  });

  it('refuses in one line a job it must not end: a running vmdr cycle\'s, another tool\'s; both keep running', async () => {
    const remedy = `\\(wait for it to end, or end it with \`virsh -c qemu:///system domjobabort ${vm.name}\`\\)`;
    const running = spawn(process.execPath, [CLI, 'sync', vm.name, '--config', config], { env: { ...process.env, ...STOP_AT_BACKUP }, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => running.once('exit', (code) => resolve(code)));
    try {
      await until('the first sync inside its cycle', () => isStopped(running.pid!));
      // The scratch image holds the guest's old blocks: QEMU's alone, in a directory nobody lists.
      const dirs = (await readdir(tmpdir())).filter((d) => d.startsWith('vmdr-scratch-')).map((d) => join(tmpdir(), d));
      const ours = (await Promise.all(dirs.map(async (d) => ((await readdir(d)).some((f) => f.startsWith(`${vm.name}-vda.`)) ? d : undefined)))).filter(Boolean) as string[];
      assert.equal(ours.length, 1, `scratch directories of ${vm.name}: ${ours.join(', ')}`);
      assert.equal((await stat(ours[0]!)).mode & 0o777, 0o711);
      for (const f of await readdir(ours[0]!)) assert.equal((await stat(join(ours[0]!, f))).mode & 0o777, 0o600, f);
      const busy = await runVmdr(['sync', vm.name, '--config', config]);
      assert.equal(busy.code, 1);
      assert.match(
        busy.stderr,
        new RegExp(`^vmdr: VM "${vm.name}" on qemu:///system has a running pull backup \\(NBD 127\\.0\\.0\\.1:\\d+, disks vda\\) of vmdr process ${running.pid}, which is still running; a new backup cannot begin until it ends ${remedy}\\n$`),
      );
    } finally {
      // Stopped at every pass of the failpoint: one pass, one SIGCONT.
      if (running.exitCode === null && running.signalCode === null) process.kill(running.pid!, 'SIGCONT');
    }
    assert.equal(await exited, 0, 'the running sync was not disturbed');

    const backup = join(vm.dir, 'other-backup.xml');
    const checkpoint = join(vm.dir, 'other-checkpoint.xml');
    await writeFile(
      backup,
      `<domainbackup mode='pull'><server transport='tcp' name='127.0.0.1' port='${await freeLoopbackPort()}'/><disks><disk name='vda' backup='yes' type='file'><scratch file='${join(vm.dir, 'other.scratch')}'/></disk></disks></domainbackup>`,
    );
    await writeFile(checkpoint, `<domaincheckpoint><name>test-other-tool</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>`);
    await virsh('backup-begin', vm.name, backup, checkpoint);
    try {
      const foreign = await runVmdr(['sync', vm.name, '--config', config]);
      assert.equal(foreign.code, 1);
      assert.match(foreign.stderr, new RegExp(`^vmdr: VM "${vm.name}" on qemu:///system has a running pull backup \\(NBD 127\\.0\\.0\\.1:\\d+, disks vda\\) that vmdr did not start; a new backup cannot begin until it ends ${remedy}\\n$`));
      assert.match(await jobOf(vm.name), /Operation:\s+Backup/, "the other tool's job still runs");
    } finally {
      await virsh('domjobabort', vm.name);
      await virsh('checkpoint-delete', vm.name, 'test-other-tool');
    }
  });
});
