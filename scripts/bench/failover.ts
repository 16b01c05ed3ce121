/**
 * `npm run bench:failover` (issue 4): what vmdr adds to a failover's recovery time over just
 * booting the same guests. One run, one machine, the many-to-one lab fleet (scripts/lab/fleet.ts):
 * six lab VMs protected onto six pre-staged targets on one DR site, one plan with a single
 * priority group (parallel 6), sources forced off (the site is lost). For 1 VM and for 6 VMs,
 * three times each:
 *   - floor: throwaway VMs with the targets' kernel, initrd, command line, memory and NIC count,
 *     each on a qcow2 overlay of its protection's newest recovery point, defined beforehand
 *     (outside the clock), then `virsh start` of all of them at once; the time until the last one
 *     prints its VMDR-GUEST ready line. They have no identity seed and keep libvirt's MACs.
 *     Then, as a second reference (not the target's floor), the same with each target's identity
 *     seed and MAC, so the guests do the targets' own identity work too (checked on their ready
 *     line): rtoMs minus this floor is what vmdr itself adds.
 *   - vmdr failover (unplanned): `vmdr failover P|--plan PLAN --json`; the report's rtoMs (the
 *     run's start to the last VM healthy) and the process's wall time; then `--revert` (timed
 *     apart).
 *   - vmdr drill: `vmdr failover … --test --json`, rtoMs and wall time (which includes removing
 *     the drill).
 * For each side it also records the CPU spent: the whole machine's, libvirtd's, the vmdr
 * process's, and the guests' own (their QEMU processes' to the ready line), so the guests' work
 * (their identity seeds' included) is told apart from what the host spends on starting them.
 * Then the vSphere figure (failover-vsphere.ts): a point's disk materialized on a vSphere
 * target's datastore, per GiB allocated, beside qemu-img convert and curl -T alone.
 * The order of floor and vmdr alternates from one repetition to the next, so neither always
 * runs first on a cold page cache, and each timed part begins on a quiet machine (quiet()). Prints a markdown report on stdout (progress on stderr) and
 * removes everything it made, also after a failure or Ctrl-C. No traffic leaves the machine: the
 * guests sit on isolated bridges and the receiver listens on loopback.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { GUEST_READY, waitForSerialLine } from '../../plugin/failover/serial-health.js';
import { labScratchDir } from '../../test/helpers/lab.js';
import { startServe } from '../../test/helpers/vmdr-serve.js';
import { ensureFleetNetwork, ensureFleetSources, FLEET_BOOT, FLEET_TARGET_MEMORY_MIB, fleetConfig, fleetMembers, fleetNetwork, fleetPlan, removeFleet, type FleetMember } from '../lab/fleet.js';
import { benchVsphereMaterialize } from './failover-vsphere.js';
import { CLI, Cleanup, describeMachine, exec, MiB, prepareMachine, processCpuMs, runBench, say, seconds, systemLibvirtdPid, table, timed, URI, virsh, median } from './lab.js';

const N = 6;
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
/** BENCH_CPU_PROFILE=DIR: each vmdr command writes a V8 CPU profile there (where its CPU goes; open in Chrome's DevTools). */
const PROFILE = process.env.BENCH_CPU_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROFILE}`] : [];
const SIZES = [1, N];
/** How long each timed part waited for a quiet machine (quiet()), in ms. */
const waits = { floor: [] as number[], failover: [] as number[] };

interface FailoverReport {
  id: string;
  startedAt: string;
  kind: string;
  status: string;
  rtoMs: number;
  groups: { name: string; startedAt: string; endedAt: string; status: string }[];
  /** Run-level steps: preflight, one per priority group. */
  run: { step: string; durationMs: number | null }[];
  vms: { protection: string; status: string; healthyAt: string | null; identity: string | null; steps: { step: string; startedAt: string; endedAt: string | null; durationMs: number; status: string }[] }[];
  error?: { code: string; message: string };
}

/**
 * One VM's way to ready, in ms from its side's clock start: when its start was asked (virsh
 * spawned; the failover's start step begun), when that start returned, when it was ready.
 */
interface VmTimes {
  asked: number;
  started: number;
  ready: number;
}

interface Sample {
  /** Each VM's times: the bare floor, the seeded floor, the failover. */
  times: { floor: VmTimes[]; seeded: VmTimes[]; failover: VmTimes[] };
  floorMs: number;
  floorEach: number[];
  /** The floor whose guests also apply the targets' identity seeds (with the targets' MACs). */
  floorSeededMs: number;
  rtoMs: number;
  wallMs: number;
  revertWallMs: number;
  drillRtoMs: number;
  drillWallMs: number;
  /** Per step name: its mean duration over the VMs, from the failover's report. */
  steps: Record<string, number>;
  /** Run-level steps (preflight, each group): their durations. */
  run: Record<string, number>;
  /** What each VM's identity step did: in-place (given at provisioning) or written. */
  identity: string[];
  /** CPU time the whole machine spent (all processes, guests included) while the floor ran, and while the failover ran. */
  floorCpuMs: number;
  /** The same while the seeded floor ran: the guests' identity work is in it, as in the failover's. */
  floorSeededCpuMs: number;
  failoverCpuMs: number;
  /** Of the failover's: the vmdr process's own, and libvirtd's; libvirtd's during the floor. */
  vmdrCpuMs: number;
  libvirtdCpuMs: number;
  floorLibvirtdCpuMs: number;
  /** The guests' QEMU processes' CPU to their ready lines, summed over the VMs: bare floor, seeded floor, failover. */
  guestsCpuMs: { floor: number; seeded: number; failover: number };
}

/** CPU time, in ms, the whole machine has spent since boot (every state but idle and iowait). */
async function machineCpuMs(): Promise<number> {
  const [, ...fields] = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  return (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) * 10;
}

/**
 * Waits until the machine is quiet: under a tenth of one core busy over half a second, 20 s at
 * most. Before each timed part, floor and failover alike: the runs of 2026-12-02 showed whichever
 * side ran first in a repetition losing 2-4 s at 6 VMs, and the floor had a lead-in of its own
 * (its `vmdr points` and definitions, before its clock) that let the previous part's teardown end
 * before it started, where the failover began the moment the drill before it returned. Returns the
 * ms waited (reported).
 */
async function quiet(): Promise<number> {
  const started = performance.now();
  for (;;) {
    const before = await machineCpuMs();
    await new Promise((r) => setTimeout(r, 500));
    if ((await machineCpuMs()) - before < 50 || performance.now() - started > 20_000) return performance.now() - started;
  }
}

/**
 * CPU the guests' QEMU processes have spent, summed (ms): read once every guest is ready, so it is
 * each guest's way to its ready line (an idle guest adds a few ms a second). Tells the guests' own
 * work (their identity seeds' included) from what the host spends besides.
 */
async function guestsCpuMs(vms: string[]): Promise<number> {
  const each = await Promise.all(vms.map(async (vm) => processCpuMs(Number((await readFile(`/run/libvirt/qemu/${vm}.pid`, 'utf8')).trim()))));
  return each.reduce((a, b) => a + b, 0);
}

/** What the machine and libvirtd spent on CPU while `work` ran. */
async function cpuDuring<T>(libvirtd: number, work: () => Promise<T>): Promise<{ value: T; machineMs: number; libvirtdMs: number }> {
  const [m0, l0] = [await machineCpuMs(), await processCpuMs(libvirtd)];
  const value = await work();
  return { value, machineMs: (await machineCpuMs()) - m0, libvirtdMs: (await processCpuMs(libvirtd)) - l0 };
}

/** Runs the built CLI; resolves with its wall time and the report (the last JSON line, after the progress lines), whatever its exit. */
function vmdrReport(args: string[]): Promise<{ wallMs: number; cpuMs: number; code: number | null; report: FailoverReport; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    // GNU time writes the process's user and system seconds as the last line of its stderr.
    const child = spawn('/usr/bin/time', ['-f', 'vmdr-cpu %U %S', process.execPath, ...PROFILE, CLI, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    child.once('error', reject);
    child.once('exit', (code) => {
      const wallMs = performance.now() - t0;
      try {
        const cpu = /vmdr-cpu ([\d.]+) ([\d.]+)\s*$/.exec(err);
        resolve({ wallMs, cpuMs: cpu ? (Number(cpu[1]) + Number(cpu[2])) * 1000 : NaN, code, report: JSON.parse(out.trim().split('\n').pop()!) as FailoverReport, stderr: err });
      } catch {
        reject(new Error(`vmdr ${args.join(' ')} exited ${code} without a JSON report: ${err.trim() || out.trim()}`));
      }
    });
  });
}

async function vmdrOk(args: string[]): Promise<{ wallMs: number; cpuMs: number; report: FailoverReport }> {
  const r = await vmdrReport(args);
  if (r.code !== 0 || r.report.status !== 'succeeded') {
    throw new Error(`vmdr ${args.join(' ')} exited ${r.code}, status ${r.report.status}: ${JSON.stringify(r.report.error ?? r.report.vms.map((v) => [v.protection, v.status]))} ${r.stderr.trim()}`);
  }
  return r;
}

interface Point {
  id: string;
  disks: { disk: string; image: string }[];
}

/**
 * The floor: the same guests booted straight from overlays of their newest points, started all
 * at once with `virsh start`; resolves with each guest's time to its ready line.
 */
async function floor(adapter: HypervisorAdapter, config: string, dir: string, prefix: string, members: FleetMember[], identity: boolean, libvirtd: number): Promise<{ each: VmTimes[]; cpu: { machineMs: number; libvirtdMs: number }; guestsMs: number }> {
  const floorDir = join(dir, identity ? 'floor-seeded' : 'floor');
  await mkdir(floorDir, { recursive: true, mode: 0o755 });
  const vms: { name: string; log: string }[] = [];
  try {
    for (const m of members) {
      const { stdout } = await exec(process.execPath, [CLI, 'points', m.protection, '--json', '--config', config], { maxBuffer: 16 * MiB });
      const newest = (JSON.parse(stdout) as Point[]).at(-1);
      if (!newest) throw new Error(`${m.protection} has no recovery point`);
      const name = `${m.source}-floor`;
      const disks = [];
      for (const d of newest.disks) {
        const overlay = join(floorDir, `${name}-${d.disk}.qcow2`);
        await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', d.image, '-F', 'qcow2', overlay]);
        disks.push({ path: overlay, format: 'qcow2' as const, target: d.disk });
      }
      const log = join(floorDir, `${name}.log`);
      if (identity) {
        // The guest's own identity work, as the target does it: the target's seed and its MAC.
        const seed = (await virsh('domblklist', m.target)).split('\n').map((l) => l.trim().split(/\s+/)[1] ?? '').find((path) => /\/seed-[^/]+\.iso$/.test(path));
        if (!seed) throw new Error(`target ${m.target} has no identity seed`);
        disks.push({ path: seed, format: 'raw' as const, target: 'vdz' });
      }
      await adapter.defineVm({
        name,
        memoryMiB: FLEET_TARGET_MEMORY_MIB,
        vcpus: 1,
        boot: FLEET_BOOT,
        disks,
        nics: [{ network: fleetNetwork(prefix), ...(identity ? { mac: m.mac } : {}) }],
        serialLog: log,
        // Not role=target: the DR host's hook refuses to start those. The fleet label lets
        // removeFleet sweep them up after a crash.
        labels: { role: 'bench', fleet: prefix },
      });
      vms.push({ name, log });
    }
    waits.floor.push(await quiet());
    const t0 = performance.now();
    const boot = async ({ name, log }: { name: string; log: string }): Promise<VmTimes> => {
      await virsh('start', name);
      const started = performance.now() - t0;
      await waitForSerialLine({ vm: name, file: log, pattern: GUEST_READY, timeoutMs: 180_000, pollMs: 50 });
      const ready = performance.now() - t0;
      if (identity && !/seed=yes mac-match=yes/.test(await readFile(log, 'utf8'))) throw new Error(`${name} booted without applying its seed`);
      return { asked: 0, started, ready };
    };
    const { value: each, ...cpu } = await cpuDuring(libvirtd, () => Promise.all(vms.map(boot)));
    return { each, cpu, guestsMs: await guestsCpuMs(vms.map((v) => v.name)) };
  } finally {
    for (const { name } of vms) {
      await adapter.stop(name, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(name);
    }
    await rm(floorDir, { recursive: true, force: true });
  }
}

/** Each VM's start step and ready time, from the run's start (the clock rtoMs counts on). */
function failoverTimes(report: FailoverReport): VmTimes[] {
  const t0 = Date.parse(report.startedAt);
  return report.vms.map((v) => {
    const start = v.steps.find((s) => s.step === 'start');
    return { asked: start ? Date.parse(start.startedAt) - t0 : NaN, started: start?.endedAt ? Date.parse(start.endedAt) - t0 : NaN, ready: v.healthyAt ? Date.parse(v.healthyAt) - t0 : NaN };
  });
}

function stepMeans(report: FailoverReport): Record<string, number> {
  const totals: Record<string, number> = {};
  for (const vm of report.vms) for (const s of vm.steps) totals[s.step] = (totals[s.step] ?? 0) + s.durationMs / report.vms.length;
  return totals;
}

function runSteps(report: FailoverReport): Record<string, number> {
  return Object.fromEntries(report.run.map((s) => [s.step, s.durationMs ?? NaN]));
}

async function main(cleanup: Cleanup): Promise<void> {
  await prepareMachine({ 'qemu-img': 'qemu-utils', time: 'time' });
  const libvirtd = await systemLibvirtdPid();
  const machine = await describeMachine();
  for (const peer of ['virtnbdbackup', 'rsync', 'nbdcopy']) delete machine[peer];
  machine.cpuModel = (await exec('lscpu').then((r) => /Model name:\s*(.*)/.exec(r.stdout)?.[1] ?? '?', () => '?')).trim();
  const otherDomains = (await virsh('list', '--name')).split('\n').map((l) => l.trim()).filter(Boolean);

  const prefix = `test-fo-${randomBytes(3).toString('hex')}`;
  const members = fleetMembers({ n: N, prefix });
  const plan = fleetPlan(prefix);
  const dir = await labScratchDir('bench-failover');
  const adapter = openAdapter(URI);
  await adapter.connect();
  cleanup.add('close libvirt connection', () => adapter.close());
  cleanup.add(`remove the fleet ${prefix}`, () => removeFleet(adapter, { n: N, prefix, dir }));
  const config = join(dir, 'vmdr.yaml');
  await writeFile(config, fleetConfig({ n: N, prefix, dir, groups: [N], parallel: N, port: await freeLoopbackPort() }));

  say(`fleet ${prefix}: ${N} sources, their DR network, the receiver`);
  await ensureFleetNetwork(adapter, prefix);
  await ensureFleetSources(adapter, members.map((m) => m.source));
  const serve = await startServe(config);
  cleanup.add('stop vmdr serve', () => serve.stop());
  await exec(process.execPath, [CLI, 'target', 'provision', '--config', config]);
  for (const m of members) {
    say(`protect ${m.protection}`);
    await exec(process.execPath, [CLI, 'protect', m.protection, '--json', '--config', config], { maxBuffer: 16 * MiB });
  }
  say('sources forced off: the production site is lost');
  await Promise.all(members.map((m) => adapter.stop(m.source, { mode: 'force' })));

  const load: string[] = [];
  const samples = new Map<number, Sample[]>(SIZES.map((s) => [s, []]));
  for (let rep = 1; rep <= REPEAT; rep += 1) {
    for (const size of SIZES) {
      const chosen = members.slice(0, size);
      const subject = size === 1 ? [chosen[0]!.protection] : ['--plan', plan];
      const runFloor = async () => {
        say(`rep ${rep}, ${size} VM(s): floor (virsh start)`);
        // CPU counted from the first start to the last ready line (floor() defines its VMs before).
        const bare = await floor(adapter, config, dir, prefix, chosen, false, libvirtd);
        say(`rep ${rep}, ${size} VM(s): floor with the targets' seeds and MACs`);
        const seeded = await floor(adapter, config, dir, prefix, chosen, true, libvirtd);
        return { bare: bare.each, cpu: bare.cpu, seeded: seeded.each, seededCpu: seeded.cpu, guestsMs: { bare: bare.guestsMs, seeded: seeded.guestsMs } };
      };
      const runFailover = async () => {
        say(`rep ${rep}, ${size} VM(s): vmdr failover ${subject.join(' ')}`);
        waits.failover.push(await quiet());
        const { value: f, ...cpu } = await cpuDuring(libvirtd, () => vmdrOk(['failover', ...subject, '--config', config]));
        if (f.report.kind !== 'unplanned') throw new Error(`expected an unplanned failover, got ${f.report.kind}`);
        const guestsMs = await guestsCpuMs(chosen.map((m) => m.target));
        say(`  rtoMs ${f.report.rtoMs}, wall ${seconds(f.wallMs)}; revert`);
        const revert = await timed(() => vmdrOk(['failover', ...subject, '--revert', '--config', config]));
        // A revert starts the sources its failover fenced (plugin/failover/revert.ts): the next run
        // is again a lost production site.
        await Promise.all(chosen.map((m) => adapter.stop(m.source, { mode: 'force' }).catch(() => undefined)));
        return { f, cpu, guestsMs, revertWallMs: revert.ms };
      };
      load.push(loadavg()[0]!.toFixed(2));
      let floors: Awaited<ReturnType<typeof runFloor>>;
      let failover: Awaited<ReturnType<typeof runFailover>>;
      if (rep % 2 === 1) {
        floors = await runFloor();
        failover = await runFailover();
      } else {
        failover = await runFailover();
        floors = await runFloor();
      }
      const floorEach = floors.bare.map((t) => t.ready);
      say(`rep ${rep}, ${size} VM(s): vmdr failover ${subject.join(' ')} --test`);
      const drill = await vmdrOk(['failover', ...subject, '--test', '--config', config]);
      samples.get(size)!.push({
        floorMs: Math.max(...floorEach),
        floorEach,
        floorSeededMs: Math.max(...floors.seeded.map((t) => t.ready)),
        times: { floor: floors.bare, seeded: floors.seeded, failover: failoverTimes(failover.f.report) },
        rtoMs: failover.f.report.rtoMs,
        wallMs: failover.f.wallMs,
        revertWallMs: failover.revertWallMs,
        drillRtoMs: drill.report.rtoMs,
        drillWallMs: drill.wallMs,
        steps: stepMeans(failover.f.report),
        run: runSteps(failover.f.report),
        identity: failover.f.report.vms.map((v) => v.identity ?? 'unknown'),
        floorCpuMs: floors.cpu.machineMs,
        floorSeededCpuMs: floors.seededCpu.machineMs,
        failoverCpuMs: failover.cpu.machineMs,
        vmdrCpuMs: failover.f.cpuMs,
        libvirtdCpuMs: failover.cpu.libvirtdMs,
        floorLibvirtdCpuMs: floors.cpu.libvirtdMs,
        guestsCpuMs: { floor: floors.guestsMs.bare, seeded: floors.guestsMs.seeded, failover: failover.guestsMs },
      });
      say(`  floor ${seconds(Math.max(...floorEach))}, failover rto ${seconds(failover.f.report.rtoMs)}, drill rto ${seconds(drill.report.rtoMs)}`);
    }
  }
  load.push(loadavg()[0]!.toFixed(2));

  // ---- report
  const out: string[] = [];
  out.push(`## Failover benchmark run of ${machine.date!.slice(0, 10)}`, '');
  out.push('Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`));
  out.push(`- other running domains at start: ${otherDomains.join(', ') || 'none'}; 1-min load average before each measurement and at the end: ${load.join(', ')}`);
  const waited = (xs: number[]) => `median ${seconds(median(xs))}, longest ${seconds(Math.max(...xs))}`;
  out.push(`- each timed part began on a quiet machine (under a tenth of a core busy for half a second); waited before the floors ${waited(waits.floor)}, before the failovers ${waited(waits.failover)}`, '');
  out.push(
    `Fleet: ${N} lab guests (${FLEET_TARGET_MEMORY_MIB} MiB, 1 vCPU, TCG, direct kernel boot with \`${FLEET_BOOT.cmdline}\`, 64 MiB ext4 qcow2 disk, 1 NIC on an isolated bridge), ` +
      `one plan with one priority group (parallel ${N}); sources forced off before the runs (unplanned failover from the newest point). ` +
      `${REPEAT} repetitions; medians, with every value in brackets.`,
    '',
  );
  const list = (xs: number[]) => `[${xs.map((x) => (x / 1000).toFixed(2)).join(', ')}]`;
  const rows: (string | number)[][] = [];
  for (const size of SIZES) {
    const s = samples.get(size)!;
    const pick = (f: (x: Sample) => number) => s.map(f);
    const overhead = pick((x) => x.rtoMs - x.floorMs);
    const ratio = pick((x) => x.rtoMs / x.floorMs);
    rows.push([
      `${size} VM${size > 1 ? 's' : ''}`,
      `${seconds(median(pick((x) => x.floorMs)))} ${list(pick((x) => x.floorMs))}`,
      `${seconds(median(pick((x) => x.rtoMs)))} ${list(pick((x) => x.rtoMs))}`,
      `${seconds(median(pick((x) => x.wallMs)))} ${list(pick((x) => x.wallMs))}`,
      `${seconds(median(overhead))} ${list(overhead)}`,
      `${median(ratio).toFixed(2)} × [${ratio.map((r) => r.toFixed(2)).join(', ')}]`,
      `${seconds(median(pick((x) => x.floorSeededMs)))} ${list(pick((x) => x.floorSeededMs))}`,
      `${seconds(median(pick((x) => x.rtoMs - x.floorSeededMs)))} ${list(pick((x) => x.rtoMs - x.floorSeededMs))}`,
      `${seconds(median(pick((x) => x.revertWallMs)))}`,
      `${seconds(median(pick((x) => x.drillRtoMs)))} ${list(pick((x) => x.drillRtoMs))}`,
      `${seconds(median(pick((x) => x.drillWallMs)))}`,
    ]);
  }
  out.push(
    table(
      ['VMs', 'floor: virsh start → last ready', 'vmdr failover rtoMs', 'failover wall', 'overhead per group (rtoMs − floor)', 'ratio rtoMs / floor', 'floor with seeds (reference)', 'rtoMs − floor with seeds', 'revert wall', 'drill (--test) rtoMs', 'drill wall'],
      rows,
    ),
    '',
  );
  out.push(
    "Where the failover's time goes, from its report (medians over the repetitions): the run's own steps, then each VM step's mean over the VMs " +
      '(the VMs of a group run side by side, so these overlap):',
    '',
  );
  for (const size of SIZES) {
    const s = samples.get(size)!;
    const names = (pick: (x: Sample) => Record<string, number>) => [...new Set(s.flatMap((x) => Object.keys(pick(x))))];
    const show = (pick: (x: Sample) => Record<string, number>) => names(pick).map((n) => `${n} ${seconds(median(s.map((x) => pick(x)[n] ?? 0)))}`).join(', ');
    const identity = Object.entries(s.flatMap((x) => x.identity).reduce<Record<string, number>>((n, a) => ({ ...n, [a]: (n[a] ?? 0) + 1 }), {}));
    out.push(`- ${size} VM${size > 1 ? 's' : ''}: run: ${show((x) => x.run)}; per VM: ${show((x) => x.steps)}; identity step: ${identity.map(([a, n]) => `${a} ×${n}`).join(', ')}`);
  }
  out.push(
    '',
    "Each VM's way to ready, every repetition (s from each side's clock start; the range over the VMs): " +
      'start asked (the floor spawns every `virsh start` at 0; the failover\'s start step begins), start returned, ready:',
    '',
  );
  const range = (xs: number[]) => `${(Math.min(...xs) / 1000).toFixed(2)}–${(Math.max(...xs) / 1000).toFixed(2)}`;
  const span = (ts: VmTimes[]) => `asked ${range(ts.map((t) => t.asked))}, started ${range(ts.map((t) => t.started))}, ready ${range(ts.map((t) => t.ready))}`;
  for (const size of SIZES) {
    for (const [i, x] of samples.get(size)!.entries()) {
      out.push(`- ${size} VM${size > 1 ? 's' : ''}, rep ${i + 1}: floor ${span(x.times.floor)}; seeded floor ${span(x.times.seeded)}; failover ${span(x.times.failover)}`);
    }
  }
  out.push(
    '',
    'CPU time spent while each ran (medians; the whole machine: guests, libvirtd, vmdr, everything; the failover from its command start to its exit, the floor from the first `virsh start` to the last ready line):',
    '',
  );
  for (const size of SIZES) {
    const s = samples.get(size)!;
    const m = (f: (x: Sample) => number) => seconds(median(s.map(f)));
    out.push(
      `- ${size} VM${size > 1 ? 's' : ''}: machine ${m((x) => x.failoverCpuMs)} during the failover against ${m((x) => x.floorCpuMs)} during the floor and ${m((x) => x.floorSeededCpuMs)} during the seeded floor; ` +
        `the vmdr process ${m((x) => x.vmdrCpuMs)}; libvirtd ${m((x) => x.libvirtdCpuMs)} against ${m((x) => x.floorLibvirtdCpuMs)}; ` +
        `the guests' QEMU processes to ready (summed over the VMs) ${m((x) => x.guestsCpuMs.failover)} in the failover, ${m((x) => x.guestsCpuMs.floor)} in the floor, ${m((x) => x.guestsCpuMs.seeded)} in the seeded floor`,
    );
  }
  out.push('');
  process.stdout.write(`${out.join('\n')}\n`);
  process.stdout.write(`\n<!-- raw: ${JSON.stringify(Object.fromEntries(samples))} -->\n`);

  // Issue 14: a vSphere target's failover first materializes the point's disks on its datastore.
  say('vSphere: recovery points materialized on a datastore of the simulator');
  process.stdout.write(`\n${(await benchVsphereMaterialize(cleanup, REPEAT)).join('\n')}\n`);
}

runBench('bench:failover', main);
