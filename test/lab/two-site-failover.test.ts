/**
 * Failover, drills and failback on the namespaced two-site lab: every `vmdr` command runs on its
 * own site (the DR site's failover, drill, failback and revert; the source site's sync and
 * daemon), and the DR site reaches the source VM only through the source site's `vmdr serve` over
 * the WAN. One VM, reused in order: a planned failover refused while the source site does not
 * answer, a drill beside a running sync, a planned failover and a failback through either daemon
 * killed -9, then the source site lost outright, an unplanned failover, the source fenced when its
 * site comes back, and the revert, which starts the source through its site (it carries this
 * failover's fence).
 */
import assert from 'node:assert/strict';
import { openAdapter } from '../../hypervisors/index.js';
import type { FailoverReport } from '../../plugin/failover/report.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { destroyLabVm, fileSize, GUEST_READY, waitForSerialLine, type LabVm } from '../helpers/lab.js';
import { hmpWrite } from '../helpers/patterns.js';
import { eventually } from '../helpers/receiver-lab.js';
import { protectAcrossSites, undoTwoSiteTest, type LabSite, type RunResult, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const MiB = 1024 * 1024;
const DISK = 32 * MiB;

describe('failover and failback on two sites (each vmdr on its own site, the WAN between them)', function () {
  this.timeout(600_000);
  let lab: TwoSites;
  let vm: LabVm;
  let dr: HypervisorAdapter;
  let configs: TwoSiteConfigs;
  let drServe: ServeProcess | undefined;
  let sourceServe: ServeProcess | undefined;
  const drNetwork = `test-drn-${process.pid.toString(36)}`;
  const p = () => vm.name;
  const target = () => `${vm.name}-dr`;

  const onDr = (...args: string[]) => lab.dr.vmdr(args, { config: configs.dr });
  const onSource = (...args: string[]) => lab.source.vmdr(args, { config: configs.source });
  const reportOf = (r: RunResult) => {
    const line = r.stdout.trim().split('\n').pop() ?? '';
    return (line.startsWith('{') ? JSON.parse(line) : undefined) as FailoverReport | undefined;
  };
  const failover = async (...args: string[]) => {
    const r = await onDr('failover', p(), ...args, '--json');
    return { ...r, report: reportOf(r) };
  };
  const failback = async (env: Record<string, string>, ...args: string[]) => {
    const r = await lab.dr.vmdr(['failback', p(), '--shutdown-timeout', '2s', '--json', ...args], { config: configs.dr, env });
    return { ...r, report: reportOf(r) };
  };
  const virsh = async (site: LabSite, ...args: string[]) => {
    const r = await site.exec('virsh', ['-q', ...args]);
    assert.equal(r.code, 0, `virsh ${args.join(' ')} on site ${site.name}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const state = (site: LabSite, name: string) => virsh(site, 'domstate', name);
  const role = async () => {
    const r = await onDr('status', '--json');
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { protection: string; role: string | null }[]).find((s) => s.protection === p())!.role;
  };
  const points = async () => {
    const r = await onDr('points', p(), '--json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { id: string; time: string; disks: { disk: string; image: string }[] }[];
  };
  /** The vmdr process inside the site was killed -9 (the exec wrapper reports it as 128+9 or as the signal). */
  const killed = (r: RunResult) => r.signal === 'SIGKILL' || r.code === 137;
  const startSourceServe = async (args: string[] = ['--no-replicate'], env?: Record<string, string>) => {
    sourceServe = await lab.source.serve(configs.source, { args, ...(env ? { env } : {}) });
  };

  before(async () => {
    ({ lab, vm, dr, configs } = await protectAcrossSites('tsf', { drNetwork }));
    drServe = await lab.dr.serve(configs.dr);
    await startSourceServe();
    // Staged from the DR site: the source VM's disk layout comes from the source site's endpoint.
    const provision = await onDr('target', 'provision');
    assert.equal(provision.code, 0, provision.stderr);
    const sync = await onSource('sync', p());
    assert.equal(sync.code, 0, sync.stderr);
  });

  after(async () => {
    await Promise.allSettled([drServe?.stop(), sourceServe?.stop()]);
    await undoTwoSiteTest({ lab, vm, dr, target, network: drNetwork });
    await destroyLabVm(vm);
  });

  it("planned while the source site's daemon is down: one line naming the unplanned way, nothing changed", async () => {
    await sourceServe!.stop();
    sourceServe = undefined;
    const r = await onDr('failover', p(), '--planned');
    assert.notEqual(r.code, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^vmdr: a planned failover of "\S+" needs its source site "source", which does not answer.*without --planned.*--force/);
    assert.equal(await state(lab.dr, target()), 'shut off');
    assert.equal(await state(lab.source, vm.name), 'running');
    assert.equal(await role(), 'replicating');
    await startSourceServe();
  });

  it('a drill on the DR site while the source site syncs: the source and its replication untouched', async () => {
    const before = (await points()).length;
    const [drill, sync] = await Promise.all([failover('--test'), onSource('sync', p())]);
    assert.equal(drill.code, 0, drill.stderr);
    assert.equal(sync.code, 0, sync.stderr);
    assert.equal(drill.report!.vms[0]!.status, 'healthy');
    assert.match(drill.report!.vms[0]!.guest!, /hostname=tsf-dr .*marker=tsf-src /);
    assert.equal(await state(lab.source, vm.name), 'running');
    assert.equal(await state(lab.dr, target()), 'shut off');
    assert.equal(await role(), 'replicating');
    assert.equal((await points()).length, before + 1, 'the sync committed its point beside the drill');
    assert.doesNotMatch(await virsh(lab.dr, 'list', '--all', '--name'), /-drill-/, 'the drill VM is gone');
  });

  it('planned from the DR site: the source site stops its VM and ships the final delta; then failback through either daemon killed -9', async () => {
    const r = await failover('--planned', '--shutdown-timeout', '5s');
    assert.equal(r.code, 0, r.stderr);
    const mine = r.report!.vms[0]!;
    assert.equal(mine.status, 'healthy');
    assert.equal(mine.dataLossWindowMs, 0);
    assert.deepEqual(mine.steps.slice(0, 2).map((s) => s.step), ['stop-source', 'final-sync']);
    assert.match(mine.guest!, /hostname=tsf-dr .*marker=tsf-src /);
    assert.equal(await state(lab.source, vm.name), 'shut off');
    assert.equal(await state(lab.dr, target()), 'running');

    // What the DR VM writes is what must travel home.
    await hmpWrite(target(), 0, '0x5d', 9 * MiB, 192 * 1024, lab.dr.uri);
    // The source site's daemon killed -9 while it writes the first frame into the source's image.
    await sourceServe!.stop();
    await startSourceServe(['--no-replicate'], { VMDR_FAILPOINT: 'receiver-frame' });
    const cut = await failback({});
    assert.equal(await sourceServe!.exited, 'SIGKILL');
    assert.equal(cut.code, 1, cut.stderr);
    assert.equal((JSON.parse(cut.stderr) as { error: { cause: string } }).error.cause, 'PEER_UNREACHABLE');
    // The DR side killed -9 while it sends a pass's blocks (the DR VM wrote more meanwhile).
    await startSourceServe();
    await hmpWrite(target(), 0, '0x6e', 20 * MiB, 64 * 1024, lab.dr.uri);
    const dead = await failback({ VMDR_FAILPOINT: 'failback-sending@2' }, '--resume');
    assert.ok(killed(dead), `the failback was to be killed: ${dead.code} ${dead.stderr}`);

    // Killed once both passes are done and the target is restored, before the source starts:
    // the source's image (on the source site) and the DR VM's disk (on the DR site) must be equal now.
    const restored = await failback({ VMDR_FAILPOINT: 'failover-after-restore-target' }, '--resume');
    assert.ok(killed(restored), `the failback was to be killed: ${restored.code} ${restored.stderr}`);
    const drDisk = (await points()).at(-1)!.disks[0]!.image;
    const compare = await lab.dr.exec('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', vm.disk, drDisk]);
    assert.equal(compare.code, 0, `the source's image differs from the DR VM's disk: ${compare.stdout}${compare.stderr}`);
    for (const [pattern, at, len] of [['0x5d', 9 * MiB, 192 * 1024], ['0x6e', 20 * MiB, 64 * 1024]] as const) {
      const read = await lab.source.exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P ${pattern} ${at} ${len}`, vm.disk]);
      assert.equal(read.code, 0, read.stderr);
      assert.doesNotMatch(read.stdout, /Pattern verification failed/, read.stdout);
    }

    const done = await failback({}, '--resume');
    assert.equal(done.code, 0, done.stderr);
    const back = done.report!.vms[0]!;
    assert.equal(back.vm, vm.name, 'the VM that came up is the source');
    assert.equal(back.status, 'healthy');
    assert.match(back.guest!, /marker=tsf-src /);
    const passes = back.passes!;
    process.stdout.write(`      (failback passes: ${JSON.stringify(passes)})\n`);
    assert.deepEqual(passes.map((x) => x.step), ['reverse-sync', 'final-delta']);
    for (const pass of passes) assert.equal(pass.bytesCompared, DISK, pass.step);
    // Only the differing blocks travel: the 256 KiB the DR VM wrote (and the little its guest
    // wrote booting), compressed on the wire; nowhere near the 32 MiB disk.
    const differing = passes.reduce((n, x) => n + x.bytesDiffering!, 0);
    const sent = passes.reduce((n, x) => n + x.bytesSent, 0);
    assert.ok(differing >= 256 * 1024 && differing < 4 * MiB, `${differing} bytes differed for a 256 KiB change`);
    assert.ok(sent <= differing, `sent ${sent} bytes for ${differing} differing`);
    assert.equal(await state(lab.source, vm.name), 'running');
    assert.equal(await state(lab.dr, target()), 'shut off');
  });

  it('the source site lost: planned is refused, unplanned says it could not fence; the site comes back fenced; the revert starts it through its site', async () => {
    // A point to fail over to that is the source as it runs now.
    const sync = await onSource('sync', p());
    assert.equal(sync.code, 0, sync.stderr);
    await lab.source.kill();
    sourceServe = undefined;

    // Planned, with the whole site gone (not only its daemon): refused the same way, nothing changed.
    const planned = await onDr('failover', p(), '--planned');
    assert.notEqual(planned.code, 0);
    assert.match(planned.stderr, /^vmdr: a planned failover of "\S+" needs its source site "source", which does not answer.*without --planned.*--force/);
    assert.equal(await state(lab.dr, target()), 'shut off');
    assert.equal(await role(), 'replicating');

    const r = await failover();
    assert.equal(r.code, 0, r.stderr);
    const mine = r.report!.vms[0]!;
    assert.equal(mine.status, 'healthy');
    assert.match(mine.sourceNotFenced ?? '', /source site "source" did not answer/);
    assert.equal(await state(lab.dr, target()), 'running');

    await lab.source.up();
    vm.adapter = openAdapter(lab.source.uri);
    await vm.adapter.connect();
    assert.equal(await state(lab.source, vm.name), 'shut off');
    // Its daemon's loop asks the DR site first, and fences the source at that first answer.
    await startSourceServe([]);
    await eventually(async () => assert.ok(sourceServe!.events.some((e) => e.event === 'source-fenced'), `no fence: ${JSON.stringify(sourceServe!.events)}`), 60_000);
    const first = sourceServe!.events.find((e) => ['source-fenced', 'cycle'].includes(e.event as string));
    assert.equal(first!.event, 'source-fenced', 'fenced before its daemon replicates anything');
    assert.match(await virsh(lab.source, 'dumpxml', '--inactive', vm.name), /key="role">fenced</);
    assert.match(await virsh(lab.source, 'dominfo', vm.name), /Autostart:\s+disable/);
    const start = await lab.source.exec('virsh', ['start', vm.name]);
    assert.notEqual(start.code, 0);
    assert.ok(
      start.stderr.includes(`vmdr: VM ${vm.name} is the fenced source of protection ${p()}, failed over to its DR site (${r.report!.id}); start it with "vmdr failback ${p()}"`),
      `virsh said: ${start.stderr}`,
    );

    // Revert: the target off, replication resumes, and the source, fenced for this failover when
    // its site came back, is started by its own site (the fence lifted, the start token there).
    const from = await fileSize(vm.log);
    const revert = await failover('--revert');
    assert.equal(revert.code, 0, revert.stderr);
    assert.equal(await state(lab.dr, target()), 'shut off');
    assert.equal(await role(), 'replicating');
    assert.equal(await state(lab.source, vm.name), 'running', 'the revert started the fenced source');
    assert.doesNotMatch(await virsh(lab.source, 'dumpxml', '--inactive', vm.name), /key="role">fenced</);
    assert.match(await virsh(lab.source, 'dominfo', vm.name), /Autostart:\s+disable/);
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 90_000, fromOffset: from });
  });
  it("the source site's clock 5 min off (faketime): points are stamped on the DR site's clock, stay in order, and --at is read on it; beyond the skew limit refused", async () => {
    // The faked clock is this process's: the sync must run in it, not in the source site's daemon.
    const syncAt = (clock: string) => lab.source.vmdr(['sync', p(), '--no-daemon'], { config: configs.source, clock });
    // The receiver refuses a stream at its header and ends the connection without reading the
    // rest of the body (server.ts): a sender still writing may see the reset (EPIPE) before the
    // answer, and then reports a cut connection instead of the reason. Either way, one line.
    const refused = (r: RunResult, reason: RegExp) => {
      assert.notEqual(r.code, 0);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(reason.test(r.stderr) || /cannot reach the endpoint of site "dr" at \S+: (write EPIPE|\S*ECONNRESET|socket hang up)/.test(r.stderr), r.stderr);
    };
    const ids = async () => (await points()).map((x) => x.id);
    const before = await points();

    // Further ahead than the receiver allows (10 min): refused, one line, nothing committed.
    refused(await syncAt('+11m'), /min ahead of the receiver's clock.*is the source host's clock right\?/);
    assert.deepEqual(await ids(), before.map((x) => x.id));

    // 5 min ahead: taken, and the point is stamped on the DR site's clock (the sender says what
    // its clock reads; the receiver takes the difference off), not 5 min in the DR site's future.
    const t0 = Date.now();
    const ahead = await syncAt('+5m');
    assert.equal(ahead.code, 0, ahead.stderr);
    const after = await points();
    assert.equal(after.length, before.length + 1);
    const stamped = Date.parse(after.at(-1)!.time);
    assert.ok(stamped >= t0 - 5_000 && stamped <= Date.now() + 5_000, `the point's time ${new Date(stamped).toISOString()} is on the DR site's clock`);

    // `--at` is read on the DR site's clock: "now" there reaches the point just taken.
    const drill = await failover('--test', '--at', new Date().toISOString());
    assert.equal(drill.code, 0, drill.stderr);
    assert.equal(drill.report!.vms[0]!.point!.id, after.at(-1)!.id);

    // 5 min behind, minutes after the sites were paired: the DR site's certificate is not valid
    // yet by the source's clock, and the line says to look at the clock.
    const behind = await syncAt('-5m');
    assert.notEqual(behind.code, 0);
    assert.equal(behind.stderr.trim().split('\n').length, 1, behind.stderr);
    assert.match(behind.stderr, /the certificate the endpoint at \S+ presented for site "dr" is outside its dates by this host's clock/, behind.stderr);
    // The clock set right again: its next point follows the last one on the DR site's clock, so
    // replication goes on at once and the points stay in order.
    const right = await syncAt('+0');
    assert.equal(right.code, 0, right.stderr);
    const last = await points();
    assert.deepEqual(last.slice(0, -1).map((x) => x.id), after.map((x) => x.id));
    assert.ok(Date.parse(last.at(-1)!.time) >= stamped, 'points stay in order');
    assert.equal(await state(lab.source, vm.name), 'running');
  });
});
