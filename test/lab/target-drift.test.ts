/**
 * A disk added to a protected VM, on the real lab: replication takes it at the next sync, but the
 * pre-staged target has no disk for it. A planned failover must then be refused before the source
 * is touched, `vmdr status` must say which disk is missing, `vmdr target provision` must add it
 * (and grow a disk the source grew), and the planned failover must then bring the added disk's
 * bytes to the DR VM.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FailoverReport } from '../../plugin/failover/report.js';
import type { ProtectionStatus } from '../../plugin/protections/status.js';
import type { ProvisionedTarget } from '../../plugin/targets/provision.js';
import { runVmdr, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const MiB = 1024 * 1024;

describe('a disk added to a protected VM (qemu:///system)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let config: string;
  let receiver: ServeProcess | undefined;
  let drNetwork: string;
  const p = () => vm.name;
  const target = () => `${vm.name}-dr`;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await vmdr(...args, '--json');
    assert.equal(r.code, 0, `vmdr ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
  };
  const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]).then((r) => r.stdout.trim());
  const state = (name: string) => virsh('domstate', name);
  const points = () => json<{ id: string; disks: { disk: string; sizeBytes: number }[] }[]>('points', p());
  /** Writes through the running source's QEMU, so its dirty bitmap sees the write. */
  const write = async (disk: string, pattern: string, offset: number, length: number) => {
    const alias = new RegExp(`<target dev='${disk}'[^]*?<alias name='([^']+)'`).exec(await virsh('dumpxml', vm.name))![1]!;
    const out = await virsh('qemu-monitor-command', vm.name, '--hmp', `qemu-io -d /machine/peripheral/${alias}/virtio-backend "write -P ${pattern} ${offset} ${length}"`);
    assert.doesNotMatch(out, /error|fail/i, out);
  };
  const imageOf = async (name: string, disk: string) => (await virsh('domblklist', name)).split('\n').find((l) => l.trim().startsWith(`${disk} `))?.trim().split(/\s+/)[1];
  const driftOf = async () => (await json<ProtectionStatus[]>('status')).find((r) => r.protection === p())!.drift;

  before(async () => {
    ({ vm, drNetwork, config } = await createProtectedLabVm('drift'));
    receiver = await serveAndRun(config, [['protect', p()]]);

    // Hot-added and kept in the definition, as an operator adds a data disk to a running server.
    const added = join(vm.dir, 'vdb.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', added, String(8 * MiB)]);
    await exec('chmod', ['644', added]);
    await virsh('attach-disk', vm.name, added, 'vdb', '--driver', 'qemu', '--subdriver', 'qcow2', '--targetbus', 'virtio', '--persistent');
    await write('vdb', '0x5a', 1 * MiB, 64 * 1024);
    const sync = await json<{ point: { disks: { disk: string }[] } }>('sync', p());
    assert.deepEqual(sync.point.disks.map((d) => d.disk), ['vda', 'vdb']);
  });

  after(async () => {
    await receiver?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
  });

  it('refuses a planned (or forced) failover in preflight, the source running and untouched', async () => {
    const before = await points();
    for (const args of [['--planned', '--shutdown-timeout', '2s'], ['--force']]) {
      const r = await vmdr('failover', p(), ...args);
      assert.equal(r.code, 1, r.stdout);
      assert.match(
        r.stderr,
        new RegExp(`^vmdr: target VM "${target()}" of protection "${p()}" on qemu:///system has no disk vdb, which recovery point ${before.at(-1)!.id} has \\(bring it up to date with \`vmdr target provision ${p()}\`\\)\\n$`),
      );
    }
    assert.equal(await state(vm.name), 'running', 'the source was neither stopped nor fenced');
    assert.equal(await state(target()), 'shut off');
    assert.deepEqual((await points()).map((x) => x.id), before.map((x) => x.id), 'no final sync ran');
    // The refusal holds nothing: the next sync goes on as before.
    assert.equal((await vmdr('sync', p())).code, 0);
  });

  it('vmdr status shows which disk drifted, in --json and in text', async () => {
    assert.deepEqual(await driftOf(), [{ disk: 'vdb', kind: 'missing', sourceBytes: 8 * MiB }]);
    const text = await vmdr('status');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`vdb missing on target \\(run \`vmdr target provision ${p()}\`\\)`));
  });

  it('vmdr target provision adds the disk on the replica, grows a grown one, and refuses a running target; an older point is then refused', async () => {
    await vm.adapter.start(target());
    const running = await vmdr('target', 'provision', p());
    await vm.adapter.stop(target(), { mode: 'force' });
    assert.equal(running.code, 1);
    assert.match(running.stderr, new RegExp(`^vmdr: cannot add disk vdb on target VM "${target()}" .*: it is running \\(.*stop it first\\)\\n$`));

    const added = await vmdr('target', 'provision', p());
    assert.equal(added.code, 0, added.stderr);
    // The seed (given at provisioning) was taken off and given again after the new disk: it stays the last one.
    assert.match(added.stdout, /updated: added vdb, identity seed written\s/);
    const disks = (await virsh('domblklist', target())).split('\n').slice(2).map((l) => l.trim().split(/\s+/).join(' '));
    assert.equal(disks.length, 3, disks.join('; '));
    assert.match(disks[0]!, /^vda \S+\/vda\/base\.qcow2$/);
    assert.match(disks[1]!, /^vdb \S+\/vdb\/base\.qcow2$/);
    assert.match(disks[2]!, /^vdc \S+\/vda\/seed-[^/]+\.iso$/);
    assert.equal(await imageOf(target(), 'vdb'), join(vm.dir, 'replicas', p(), 'vdb', 'base.qcow2'));
    assert.deepEqual(await driftOf(), []);
    // A point from before the disk was added: the target's vdb would boot on the replica's base.
    const first = (await points())[0]!;
    assert.deepEqual(first.disks.map((d) => d.disk), ['vda']);
    const older = await vmdr('failover', p(), '--point', first.id, '--force');
    assert.equal(older.code, 1);
    assert.match(older.stderr, new RegExp(`^vmdr: target VM "${target()}" .* has disk vdb, which recovery point ${first.id} does not have: booted, it would write into the replica \\(remove it from the target VM first, or fail over to a point that has it\\)\\n$`));
    assert.equal(await state(vm.name), 'running', 'the source was not fenced');

    await virsh('blockresize', vm.name, 'vdb', `${12 * MiB}B`);
    await write('vdb', '0x6b', 10 * MiB, 64 * 1024);
    assert.deepEqual(await driftOf(), [{ disk: 'vdb', kind: 'size', sourceBytes: 12 * MiB, targetBytes: 8 * MiB }]);
    const [grown] = await json<ProvisionedTarget[]>('target', 'provision', p());
    assert.equal(grown!.action, 'updated');
    assert.deepEqual(grown!.changes, [{ disk: 'vdb', change: 'grown', sizeBytes: 12 * MiB, fromBytes: 8 * MiB }]);
    const [again] = await json<ProvisionedTarget[]>('target', 'provision', p());
    assert.equal(again!.action, 'unchanged');
    assert.deepEqual(await driftOf(), []);
  });

  it('a planned failover is refused too when only the source has the disk (the final sync would bring it)', async () => {
    const extra = join(vm.dir, 'vdc.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', extra, String(4 * MiB)]);
    await exec('chmod', ['644', extra]);
    await virsh('attach-disk', vm.name, extra, 'vdc', '--driver', 'qemu', '--subdriver', 'qcow2', '--targetbus', 'virtio');
    try {
      const r = await vmdr('failover', p(), '--planned', '--shutdown-timeout', '2s');
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, new RegExp(`has no disk vdc, which its source VM "${vm.name}" has and the final sync would bring \\(bring it up to date`));
      assert.equal(await state(vm.name), 'running');
    } finally {
      await virsh('detach-disk', vm.name, 'vdc');
    }
  });

  it('the planned failover then succeeds: the DR VM has the added disk with the bytes the source wrote last', async () => {
    const r = await vmdr('failover', p(), '--planned', '--shutdown-timeout', '2s', '--json');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(report.vms[0]!.status, 'healthy');
    assert.equal(report.vms[0]!.dataLossWindowMs, 0);
    assert.equal(await state(target()), 'running');
    const image = (await imageOf(target(), 'vdb'))!;
    assert.match(image, /vdb\/failover-fo-.*\.qcow2$/);
    const info = JSON.parse((await exec('qemu-img', ['info', '-U', '--output=json', image])).stdout) as { 'virtual-size': number };
    assert.equal(info['virtual-size'], 12 * MiB);
    for (const [pattern, offset] of [['0x5a', 1 * MiB], ['0x6b', 10 * MiB]] as const) {
      const { stdout } = await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P ${pattern} ${offset} 64k`, image]);
      assert.doesNotMatch(stdout, /fail/i, stdout);
    }

    // A failed-over protection's target is the DR VM: provisioning leaves it alone.
    await virsh('attach-disk', vm.name, join(vm.dir, 'vdc.qcow2'), 'vdc', '--driver', 'qemu', '--subdriver', 'qcow2', '--targetbus', 'virtio', '--config');
    const refused = await vmdr('target', 'provision', p());
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^vmdr: cannot add disk vdc on target VM .*: its protection is failed over \(fo-\S+\) \(bring it home with `vmdr failback \S+`.*\)\n$/);
  });
});
