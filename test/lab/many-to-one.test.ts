/**
 * Many to one: six source VMs fail over onto one DR host, each onto its own pre-staged target VM
 * with its own identity (hostname, MAC, address) and its own data, in the plan's priority groups
 * (2, then 4, three at a time); `--revert` then gives every target back to replication.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { ensureFleetNetwork, ensureFleetSources, fleetConfig, fleetMembers, fleetPlan, removeFleet, type FleetMember } from '../../scripts/lab/fleet.js';
import { ensureLabGuest, labScratchDir, parseGuestFields, runVmdr } from '../helpers/lab.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);

interface Step {
  step: string;
  status: string;
  startedAt: string;
  endedAt: string | null;
  error?: { code: string; message: string };
}
interface VmReport {
  protection: string;
  targetVm: string;
  group: string;
  status: string;
  point: { id: string; time: string };
  dataLossWindowMs: number;
  healthyAt: string | null;
  guest: string | null;
  steps: Step[];
}
interface FailoverReport {
  id: string;
  kind: string;
  plan: string | null;
  status: string;
  rtoMs: number;
  groups: { name: string; startedAt: string; endedAt: string; status: string }[];
  vms: VmReport[];
  error?: { code: string; message: string };
}

const N = 6;
/** Each member's own 64 KiB: pattern byte 0xa0 + i at 48 MiB + i × 64 KiB (free space of its ext4). */
const pattern = (m: FleetMember) => ({ byte: `0x${(0xa0 + m.index).toString(16)}`, offset: 48 * 1024 * 1024 + m.index * 64 * 1024 });

/** HMP qemu-io on the VM's first disk, through QEMU's block layer (so the dirty bitmap sees it). */
async function hmpQemuIo(vm: string, command: string): Promise<void> {
  // HMP's qemu-io answers with nothing: its output goes to QEMU's log, so callers check the image.
  await exec('virsh', ['-c', 'qemu:///system', 'qemu-monitor-command', vm, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${command}"`]);
}

/** Fails unless `image` (with its backing chain) holds the member's pattern; works while a VM runs it. */
async function assertPattern(image: string, m: FleetMember, whose: string): Promise<void> {
  const { byte, offset } = pattern(m);
  const read = await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P ${byte} ${offset} 64k`, image]).catch((err: { stdout?: string; stderr?: string }) => err);
  assert.doesNotMatch(`${read.stdout}${read.stderr}`, /Pattern verification failed|error|failed/i, `${whose} (${image}) lacks ${m.source}'s write: ${read.stdout}${read.stderr}`);
  assert.match(read.stdout ?? '', /read 65536\/65536 bytes/, `${whose} (${image}): ${read.stdout}${read.stderr}`);
}

/** Runs `work` over `items`, at most `limit` at once. */
async function bounded<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: limit }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await work(item);
  }));
}

describe('many to one: six source VMs fail over onto one DR host, each onto its own target (qemu:///system)', function () {
  this.timeout(360_000);
  const prefix = `test-m2o-${randomBytes(3).toString('hex')}`;
  const members = fleetMembers({ n: N, prefix });
  const plan = fleetPlan(prefix);
  let dir: string | undefined;
  let adapter: HypervisorAdapter;
  let config: string;
  let serve: ServeProcess | undefined;
  let report: FailoverReport;

  const vmdr = async (...args: string[]) => {
    const result = await runVmdr([...args, '--config', config]);
    assert.equal(result.code, 0, `vmdr ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()}`);
    return result;
  };

  before(async () => {
    await ensureLabGuest();
    dir = await labScratchDir('m2o');
    adapter = openAdapter('qemu:///system');
    await adapter.connect();
    config = join(dir, 'vmdr.yaml');
    await writeFile(config, fleetConfig({ n: N, prefix, dir, groups: [2, 4], parallel: 3, port: await freeLoopbackPort() }));
    await ensureFleetNetwork(adapter, prefix);
    await ensureFleetSources(adapter, members.map((m) => m.source));
    serve = await startServe(config);
    await vmdr('target', 'provision');
    await bounded(members, 3, async (m) => void (await vmdr('protect', m.protection, '--json')));
    // Each source writes its own pattern, then ships it: the newest point holds it.
    for (const m of members) {
      const { byte, offset } = pattern(m);
      await hmpQemuIo(m.source, `write -P ${byte} ${offset} 64k`);
      await hmpQemuIo(m.source, 'flush');
      await assertPattern((await adapter.getVm(m.source)).disks[0]!.path!, m, m.source);
    }
    await bounded(members, 3, async (m) => void (await vmdr('sync', m.protection, '--json')));
    // The production site is lost.
    await Promise.all(members.map((m) => adapter.stop(m.source, { mode: 'force' })));
  });

  after(async () => {
    await serve?.stop();
    if (dir) await removeFleet(adapter, { n: N, prefix, dir });
    await adapter?.close();
  });

  it('fails the plan over: groups in order, every VM healthy with its own identity and its own data', async () => {
    const result = await runVmdr(['failover', '--plan', plan, '--json', '--config', config]);
    assert.ok(result.stdout.trim(), `no report on stdout; exit ${result.code}: ${result.stderr.trim()}`);
    report = JSON.parse(result.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(result.code, 0, `exit ${result.code}: ${result.stderr.trim()}\n${JSON.stringify(report.error ?? report.vms.flatMap((v) => v.steps.filter((s) => s.error)))}`);
    assert.equal(report.status, 'succeeded');
    assert.equal(report.kind, 'unplanned');
    assert.equal(report.plan, plan);
    assert.ok(report.rtoMs > 0, `rtoMs ${report.rtoMs}`);

    assert.deepEqual(report.groups.map((g) => [g.name, g.status]), [['group-1', 'done'], ['group-2', 'done']]);
    const [first, second] = report.groups;
    assert.ok(Date.parse(second!.startedAt) >= Date.parse(first!.endedAt), `group-2 started ${second!.startedAt}, before group-1 ended ${first!.endedAt}`);

    assert.equal(report.vms.length, N);
    // Each group prepares all its VMs (group-2: four, three at a time) before it starts any.
    for (const group of report.groups) {
      const vms = report.vms.filter((v) => v.group === group.name);
      const at = (step: string, end: 'startedAt' | 'endedAt') => vms.map((v) => Date.parse(v.steps.find((s) => s.step === step)![end]!));
      assert.ok(Math.min(...at('start', 'startedAt')) >= Math.max(...at('identity', 'endedAt')), `${group.name}: a VM started before every VM of its group had its identity`);
    }
    for (const m of members) {
      const vm = report.vms.find((v) => v.protection === m.protection);
      assert.ok(vm, `${m.protection} is not in the report`);
      assert.equal(vm.status, 'healthy', `${m.protection}: ${JSON.stringify(vm.steps.filter((s) => s.error))}`);
      assert.equal(vm.targetVm, m.target);
      assert.equal(vm.group, m.index <= 2 ? 'group-1' : 'group-2');
      assert.ok(vm.point?.id, `${m.protection} names no point`);
      assert.ok(vm.dataLossWindowMs >= 0, `${m.protection}: dataLossWindowMs ${vm.dataLossWindowMs}`);
      assert.ok(vm.healthyAt && Date.parse(vm.healthyAt) <= Date.parse(vm.group === 'group-1' ? first!.endedAt : second!.endedAt));
      assert.ok(vm.guest, `${m.protection}: no guest line`);
      const guest = parseGuestFields(vm.guest.replace(/^.*?VMDR-GUEST ready /, ''));
      assert.equal(guest.hostname, m.hostname, vm.guest);
      assert.equal(guest.mac, m.mac, vm.guest);
      assert.equal(guest.ip, m.address, vm.guest);
      assert.equal(guest.gw, '192.0.2.1', vm.guest);
      assert.equal(guest.dns, '192.0.2.53', vm.guest);
      assert.equal(guest.marker, m.source, `${m.target} must boot ${m.source}'s disk: ${vm.guest}`);
      assert.equal(guest['mac-match'], 'yes', vm.guest);

      const info = await adapter.getVm(m.target);
      assert.equal(info.powerState, 'running');
      const disk = info.disks.find((d) => d.target === 'vda');
      assert.ok(disk?.path, `${m.target} has no vda`);
      await assertPattern(disk.path, m, m.target);
    }
  });

  it('--revert gives every target back to replication: shut off, labelled role=target', async () => {
    assert.ok(report, 'the failover did not run');
    const result = await vmdr('failover', '--plan', plan, '--revert', '--json');
    const revert = JSON.parse(result.stdout.trim().split('\n').pop()!) as FailoverReport;
    assert.equal(revert.status, 'succeeded');
    assert.equal(revert.kind, 'revert');
    for (const m of members) {
      const info = await adapter.getVm(m.target);
      assert.equal(info.powerState, 'shutoff', `${m.target} is ${info.powerState}`);
      assert.equal(info.labels.role, 'target', `${m.target}: ${JSON.stringify(info.labels)}`);
      assert.equal(info.labels.protection, m.protection);
    }
  });
});
