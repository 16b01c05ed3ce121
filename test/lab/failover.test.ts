/**
 * Failover on the real lab: a source VM protected onto a pre-staged target through a running
 * receiver, then each kind of failover as a user runs it from the CLI, judged by what the target
 * guest prints (its identity, the source's marker), what its disk holds, and what the CLI says.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { assertProgress, jsonLines, type ProgressEvent } from '../helpers/assertions.js';
import { GUEST_READY, labBoot, runVmdr, waitForSerialLine, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, labProtection, serveAndRun } from '../helpers/protected-vm.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
// Its own per run: preflight refuses a MAC a running VM has, and other runs of this suite may be running.
const MAC = `52:54:00:d9:${[...randomBytes(2)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;

describe('vmdr failover on the lab (qemu:///system)', function () {
  this.timeout(600_000);
  let vm: LabVm;
  let config: string;
  let receiver: ServeProcess | undefined;
  let drNetwork: string;
  const p = () => vm.name;
  const target = () => `${vm.name}-dr`;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const failover = async (...args: string[]) => {
    const r = await vmdr('failover', ...args, '--json');
    const line = r.stdout.trim().split('\n').pop() ?? '';
    return { ...r, report: (line.startsWith('{') ? JSON.parse(line) : undefined) as FailoverReport | undefined };
  };
  const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]).then((r) => r.stdout.trim());
  /** The seed attached to the target (its last disk), as libvirt has it. */
  const targetSeed = async () => {
    const seed = (await virsh('domblklist', target())).split('\n').map((l) => l.trim().split(/\s+/)[1] ?? '').find((f) => /\/seed-[^/]+\.iso$/.test(f));
    assert.ok(seed, 'the target has an identity seed');
    await readFile(seed);
    return seed;
  };
  const state = (name: string) => virsh('domstate', name);
  const qemuIo = (name: string, command: string) => virsh('qemu-monitor-command', name, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${command}"`);

  /** The config with an edit: the same state file, so the same protection and its points. */
  const configVariant = async (name: string, edit: (text: string) => string) => {
    const file = join(vm.dir, `${name}.yaml`);
    await writeFile(file, edit(await readFile(config, 'utf8')));
    return file;
  };

  before(async () => {
    ({ vm, drNetwork, config } = await createProtectedLabVm('failover', {
      hostname: 'failover-dr',
      nic: { mac: MAC, addresses: ['192.0.2.21/24'], gateway: '192.0.2.1', dns: ['192.0.2.53'] },
      more: (vm, drNetwork) => labProtection(vm, { name: `${vm.name}-unsynced`, network: drNetwork }),
    }));
    receiver = await serveAndRun(config, [['target', 'provision'], ['protect', vm.name]]);
    // Provisioning gave the target its identity seed: a failover only checks it.
    await targetSeed();
  });

  after(async () => {
    await receiver?.stop();
    await destroyProtectedLabVm(vm, drNetwork, [`${vm.name}-unsynced-dr`, `${vm.name}-rival`]);
  });

  it('refuses, before touching anything, what cannot work: each with one line and exit 1', async () => {
    const running = await vmdr('failover', p());
    assert.equal(running.code, 1);
    assert.match(running.stderr, /^vmdr: source VM "\S+" of protection "\S+" is still running .*--planned.*--force/m);
    assert.equal(running.stderr.trim().split('\n').length, 1, running.stderr);

    const none = await vmdr('failover', `${vm.name}-unsynced`, '--force');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /has no recovery point yet/);

    const missing = await vmdr('failover', p(), '--point', 'rp-999', '--force');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /has no recovery point rp-999/);

    const early = await vmdr('failover', p(), '--at', '2001-01-01T00:00:00Z', '--force');
    assert.equal(early.code, 1);
    assert.match(early.stderr, /no recovery point at or before 2001-01-01/);

    const badTime = await vmdr('failover', p(), '--at', 'yesterday');
    assert.equal(badTime.code, 2);
    assert.match(badTime.stderr, /--at "yesterday" is not a time/);

    // A VM already on the DR host with the target's MAC.
    await vm.adapter.defineVm({ name: `${vm.name}-rival`, memoryMiB: 128, vcpus: 1, boot: labBoot(), disks: [], nics: [{ network: drNetwork, mac: MAC }] });
    await vm.adapter.start(`${vm.name}-rival`);
    const clash = await vmdr('failover', p(), '--force');
    await vm.adapter.stop(`${vm.name}-rival`, { mode: 'force' });
    assert.equal(clash.code, 1);
    assert.match(clash.stderr, new RegExp(`MAC ${MAC} .* already used by VM "${vm.name}-rival"`));

    // The same protection with its DR network or its target VM gone.
    const variant = async (name: string, edit: (t: string) => string) => runVmdr(['failover', p(), '--force', '--config', await configVariant(name, edit)]);
    const noNetwork = await variant('no-network', (t) => t.replace(`network: ${drNetwork}, addresses`, 'network: vmdr-no-such-net, addresses'));
    assert.equal(noNetwork.code, 1);
    assert.match(noNetwork.stderr, /network "vmdr-no-such-net" .*(does not exist|not found)/i);
    const noTarget = await variant('no-target', (t) => t.replace(`vm: ${vm.name}-dr\n`, `vm: ${vm.name}-gone\n`));
    assert.equal(noTarget.code, 1);
    assert.match(noTarget.stderr, /target VM "\S+-gone" .* does not exist \(pre-stage it with `vmdr target provision`\)/);

    await vm.adapter.start(target());
    const targetRunning = await vmdr('failover', p(), '--force');
    await vm.adapter.stop(target(), { mode: 'force' });
    assert.equal(targetRunning.code, 1);
    assert.match(targetRunning.stderr, /target VM "\S+" .* is running/);

    assert.equal(await state(vm.name), 'running', 'the source was not touched');
    assert.equal(await state(target()), 'shut off', 'the target was not touched');
  });

  it('--test boots the newest point in a bubble with the DR identity, then removes it all; replication goes on', async () => {
    const r = await failover(p(), '--test');
    assert.equal(r.code, 0, r.stderr);
    const vmReport = r.report!.vms[0]!;
    // --json streams each step of the run and of the VM as progress: begun (0 of 1), then over (1 of 1).
    const steps = [...r.report!.run, ...vmReport.steps];
    const progress = assertProgress(jsonLines<ProgressEvent>(r.stdout), steps.map((s) => s.step));
    for (const s of steps) {
      const own = progress.filter((e) => e.phase === s.step && e.subject?.failover === r.report!.id && e.subject?.protection === (vmReport.steps.includes(s) ? p() : undefined));
      assert.deepEqual(own.map((e) => [e.done, e.total, e.unit]), [[0, 1, 'steps'], [1, 1, 'steps']], `step ${s.step}: ${JSON.stringify(own)}`);
    }
    assert.equal(vmReport.status, 'healthy');
    assert.match(vmReport.guest!, /hostname=failover-dr /);
    assert.match(vmReport.guest!, new RegExp(`mac=${MAC} ip=192.0.2.21/24 gw=192.0.2.1 dns=192.0.2.53 marker=failover-src `));
    assert.match(vmReport.guest!, /mac-match=yes/);
    const drillVm = `${target()}-drill-${r.report!.id.slice(-6)}`;
    await assert.rejects(virsh('dominfo', drillVm), 'the drill VM is gone');
    const networks = await virsh('net-list', '--all', '--name');
    assert.ok(!networks.includes(`vmdr-drill-${r.report!.id.slice(-6)}`), networks);
    assert.equal(vmReport.identity, 'written', 'a drill VM is new: it gets a seed of its own');
    const files = (await exec('find', [join(vm.dir, 'replicas', p()), '-name', `drill-${r.report!.id}*`, '-o', '-name', 'seed-*'])).stdout.trim().split('\n');
    assert.deepEqual(files, [await targetSeed()], 'the drill removed its boot disks and its seed; the target keeps its own');
    assert.equal(await state(vm.name), 'running');
    assert.equal(await state(target()), 'shut off');
    const points = JSON.parse((await vmdr('points', p(), '--json')).stdout) as { id: string; pinned?: boolean }[];
    assert.ok(points.every((x) => !x.pinned), 'the drill let go of its point');
    const sync = await vmdr('sync', p());
    assert.equal(sync.code, 0, sync.stderr);
  });

  it('planned: shuts the source down, ships a final delta, and the target holds what the source wrote last', async () => {
    await qemuIo(vm.name, 'write -P 0x7e 8M 64k');
    const r = await failover(p(), '--planned', '--shutdown-timeout', '2s');
    assert.equal(r.code, 0, r.stderr);
    const report = r.report!;
    assert.equal(report.kind, 'planned');
    assert.equal(report.vms[0]!.dataLossWindowMs, 0);
    assert.deepEqual(
      report.vms[0]!.steps.map((s) => s.step),
      ['stop-source', 'final-sync', 'stop-replication', 'fence-source', 'choose-point', 'pin-point', 'prepare-disks', 'promote', 'identity', 'start', 'health'],
    );
    assert.equal(await state(vm.name), 'shut off');
    // The source it stopped stays stopped: labelled fenced, its start refused by the hook.
    assert.match(await virsh('dumpxml', '--inactive', vm.name), /key="role">fenced</);
    const start = await virsh('start', vm.name).then(() => 'started', (err: { stderr?: string }) => err.stderr ?? String(err));
    assert.match(start, /vmdr: VM \S+ is the fenced source of protection/);
    assert.equal(await state(target()), 'running');
    // Read through the running target's own overlay (shared lock), as its guest sees the disk.
    const image = (await virsh('domblklist', target())).split('\n').find((l) => l.trim().startsWith('vda'))!.trim().split(/\s+/)[1]!;
    assert.match(image, /failover-fo-.*\.qcow2$/);
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x7e 8M 64k', image]);
    assert.match(report.vms[0]!.guest!, /marker=failover-src .*mac-match=yes/);
    assert.equal(report.vms[0]!.identity, 'in-place', 'provisioning gave the target its identity');

    const sync = await vmdr('sync', p());
    assert.equal(sync.code, 1);
    assert.match(sync.stderr, /was failed over .* takes no new recovery point/);
    const again = await vmdr('failover', p(), '--force');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /is already failed over/);

    const revert = await failover(p(), '--revert');
    assert.equal(revert.code, 0, revert.stderr);
    assert.equal(await state(target()), 'shut off');
    assert.equal(await state(vm.name), 'running', 'the source this failover stopped is started again');
    const labels = await virsh('dumpxml', '--inactive', target());
    assert.match(labels, /key="role">target</);
    assert.match(labels, /replicas\/[^/]+\/vda\/base\.qcow2/);
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000 });
    const sync2 = await vmdr('sync', p());
    assert.equal(sync2.code, 0, sync2.stderr);
  });

  it('unplanned, killed between two steps: a second run is refused, --resume finishes it', async () => {
    const killed = await runVmdr(['failover', p(), '--force', '--json', '--config', config], { VMDR_FAILPOINT: 'failover-after-identity' });
    assert.equal(killed.signal, 'SIGKILL');
    assert.equal(await state(vm.name), 'shut off', 'the source was fenced');

    const second = await vmdr('failover', p(), '--force');
    assert.equal(second.code, 1);
    assert.match(second.stderr, /stopped half way .*--resume/);

    const resumed = await failover(p(), '--resume');
    assert.equal(resumed.code, 0, resumed.stderr);
    const steps = resumed.report!.vms[0]!.steps;
    assert.deepEqual(
      steps.map((s) => `${s.step}:${s.status}`),
      ['fence-source:done', 'stop-replication:done', 'choose-point:done', 'pin-point:done', 'prepare-disks:done', 'promote:done', 'identity:done', 'start:done', 'health:done'],
    );
    assert.match(resumed.report!.vms[0]!.guest!, /hostname=failover-dr .*marker=failover-src/);
    assert.ok(resumed.report!.rtoMs! > 0);

  });

  it('failback: what the DR VM wrote goes home (only what differs), the source runs again, replication resumes', async () => {
    await qemuIo(target(), 'write -P 0x3c 12M 128k');
    // Killed after the data went home but before the replica adopted it: the resumed run finishes.
    const killed = await runVmdr(['failback', p(), '--shutdown-timeout', '2s', '--json', '--config', config], { VMDR_FAILPOINT: 'failover-before-adopt-point' });
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    // Both passes home said, per disk as they went, the bytes compared and the bytes copied.
    const copies = assertProgress(jsonLines<ProgressEvent>(killed.stdout), ['compare', 'copy']);
    assert.ok(copies.every((e) => e.unit === 'bytes' && e.subject?.protection === p() && e.subject?.disk === 'vda'), JSON.stringify(copies));
    assert.equal(copies.filter((e) => e.phase === 'compare').pop()!.total, 32 * 1024 * 1024);
    const passes = copies.filter((e, i) => e.phase === 'copy' && copies[i - 1]?.phase === 'compare');
    assert.equal(passes.length, 2, 'reverse-sync and final-delta');
    assert.ok(passes[0]!.total >= 128 * 1024, `the DR VM's 128 KiB went home: ${JSON.stringify(passes)}`);
    const r = await runVmdr(['failback', p(), '--resume', '--json', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(report.kind, 'failback');
    assert.deepEqual(
      report.vms[0]!.steps.map((s) => `${s.step}:${s.status}`),
      ['reverse-sync:done', 'stop-target:done', 'final-delta:done', 'adopt-point:done', 'restore-target:done', 'start-source:done', 'health:done'],
    );
    assert.match(report.vms[0]!.guest!, /marker=failover-src /);
    assert.equal(await state(vm.name), 'running');
    assert.equal(await state(target()), 'shut off');
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x3c 12M 128k', vm.disk]);
    assert.match(await virsh('dumpxml', '--inactive', target()), /key="role">target</);

    const sync = await runVmdr(['sync', p(), '--json', '--config', config]);
    assert.equal(sync.code, 0, sync.stderr);
    const points = JSON.parse((await vmdr('points', p(), '--json')).stdout) as { id: string; disks: { image: string }[] }[];
    const newest = points.at(-1)!;
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x3c 12M 128k', newest.disks[0]!.image]);
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x7e 8M 64k', newest.disks[0]!.image]);
  });

  it('an identity changed in the config: the failover gives the target the new one (the guest prints it); provisioning gives it back', async () => {
    const before = await targetSeed();
    const changed = await configVariant('new-identity', (t) => t.replace('hostname: failover-dr\n', 'hostname: failover-dr2\n').replace('addresses: [192.0.2.21/24]', 'addresses: [192.0.2.22/24]'));
    const r = await runVmdr(['failover', p(), '--force', '--json', '--config', changed]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(report.vms[0]!.identity, 'written');
    assert.match(report.vms[0]!.guest!, new RegExp(`hostname=failover-dr2 mac=${MAC} ip=192.0.2.22/24 .*marker=failover-src .*seed=yes mac-match=yes`));
    const now = await targetSeed();
    assert.notEqual(now, before);
    await assert.rejects(readFile(before), { code: 'ENOENT' }, 'the seed it replaced is deleted');
    const revert = await runVmdr(['failover', p(), '--revert', '--config', changed]);
    assert.equal(revert.code, 0, revert.stderr);
    assert.equal(await targetSeed(), now, 'the revert keeps the target identity');

    // The config as it was: provisioning writes its identity again, then finds it in place.
    const provision = async () => JSON.parse((await vmdr('target', 'provision', p(), '--json')).stdout.trim().split('\n').pop()!) as { action: string; identity: string }[];
    assert.deepEqual((await provision()).map((x) => [x.action, x.identity]), [['updated', 'written']]);
    assert.deepEqual((await provision()).map((x) => [x.action, x.identity]), [['unchanged', 'in-place']]);
    assert.equal(await targetSeed(), before);
  });

  it('killed inside any step (the step recorded as started, not done), --resume brings the VM up healthy', async () => {
    const ids: string[] = [];
    const steps = ['preflight', 'fence-source', 'stop-replication', 'choose-point', 'pin-point', 'prepare-disks', 'promote', 'identity', 'start', 'health'];
    for (const step of steps) {
      if ((await state(vm.name)) !== 'running') await vm.adapter.start(vm.name);
      const killed = await runVmdr(['failover', p(), '--force', '--json', '--config', config], { VMDR_FAILPOINT: `failover-before-${step}` });
      assert.equal(killed.signal, 'SIGKILL', `${step}: ${killed.stderr}`);
      const resumed = await failover(p(), '--resume');
      assert.equal(resumed.code, 0, `${step}: ${resumed.stderr}`);
      ids.push(resumed.report!.id);
      const vmReport = resumed.report!.vms[0]!;
      assert.equal(vmReport.status, 'healthy', step);
      assert.match(vmReport.guest!, /hostname=failover-dr .*marker=failover-src .*mac-match=yes/, step);
      assert.equal(await state(vm.name), 'shut off', `${step}: the source is fenced`);
      const revert = await failover(p(), '--revert');
      assert.equal(revert.code, 0, `${step}: ${revert.stderr}`);
      assert.equal(await state(target()), 'shut off', step);
    }
    const leftovers = (await exec('find', [join(vm.dir, 'replicas'), '-name', 'failover-*'])).stdout.trim().split('\n');
    assert.deepEqual(leftovers.filter((f) => ids.some((id) => f.includes(id))), [], 'every failover overlay was removed by its revert');
  });

  it('a plan stops at a VM that fails its health check (a second run meanwhile is refused), or skips it when it says so', async () => {
    const unhealthy = (policy: string) => (t: string) =>
      `${t.replace('health: { serial: "^VMDR-GUEST ready", timeout: 90s }', 'health: { serial: "^never printed", timeout: 8s }')}plans:
  - name: lone
    onHealthFailure: ${policy}
    groups: [{ name: first, vms: [${vm.name}] }]
`;
    const stopping = await configVariant('plan-stop', unhealthy('stop'));
    if ((await state(vm.name)) !== 'running') await vm.adapter.start(vm.name);
    const running = runVmdr(['failover', '--plan', 'lone', '--force', '--json', '--config', stopping]);
    await new Promise((r) => setTimeout(r, 4000));
    const second = await vmdr('failover', p(), '--force');
    assert.equal(second.code, 1);
    assert.match(second.stderr, /is being failed over by fo-\S+ right now \(wait for it to end\)/);
    const stopped = await running;
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /failed its serial health check: no line matching \/\^never printed\//);
    const report = JSON.parse(stopped.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(report.status, 'failed');
    assert.deepEqual(report.groups.map((g) => `${g.name}:${g.status}`), ['first:failed']);
    assert.equal(report.vms[0]!.status, 'failed');
    assert.equal((await runVmdr(['failover', '--plan', 'lone', '--revert', '--config', stopping])).code, 0);

    const skipping = await configVariant('plan-skip', unhealthy('skip'));
    await vm.adapter.start(vm.name).catch(() => undefined);
    const skipped = await runVmdr(['failover', '--plan', 'lone', '--force', '--json', '--config', skipping]);
    assert.equal(skipped.code, 0, skipped.stderr);
    const skipReport = JSON.parse(skipped.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(skipReport.status, 'succeeded');
    assert.equal(skipReport.vms[0]!.status, 'skipped');
    assert.equal((await runVmdr(['failover', '--plan', 'lone', '--revert', '--config', skipping])).code, 0);
    assert.equal(await state(target()), 'shut off');
  });
});
