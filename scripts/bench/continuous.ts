/**
 * `npm run bench:continuous` (issue 3, continuous mode): a lab guest writing 5 MB/s
 * (`vmdr.mode=writer vmdr.write_kbps=5120`) to a 1 GiB disk, `vmdr sync --continuous --json` for
 * about 60 s against `vmdr serve` on loopback. Reports the lag at each commit (p50/p95/max), the
 * cycle duration, the worst staleness an observer could see (a point's instant to the next
 * point's commit) and the guest's real write rate (from its `wrote bytes=` serial lines).
 *
 * Then, to show where a cycle's time goes, an instrumented harness runs more cycles in this
 * process through plugin/replication/sync.ts itself, with the change tracker and the receiver
 * client wrapped in timers (libvirt calls, NBD, HTTPS); with BENCH_STRACE=1 `vmdr serve` is traced with strace
 * (execve and exits only) for the receiver's child processes (qemu-img, qemu-nbd).
 * No plugin code is changed; nothing leaves loopback.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { BackupSession, ChangeTracker, HypervisorAdapter, Progress } from '../../hypervisors/types.js';
import { loadConfig } from '../../plugin/config/load.js';
import { findProtection } from '../../plugin/protections/find.js';
import { receiverFor } from '../../plugin/replication/sender/connect.js';
import type { ReceiverClient } from '../../plugin/replication/sender/receiver-client.js';
import { syncProtection } from '../../plugin/replication/sync.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { StateStore } from '../../plugin/state/store.js';
import { LAB_CMDLINE, makeDisk } from '../../test/helpers/lab.js';
import { CLI, Cleanup, MiB, runBench, bootVm, describeMachine, exec, mib, openLab, percentile, prepareMachine, readWriterLines, say, startVmdr, table, vmdrJson } from './lab.js';

const RUN_SECONDS = Number(process.env.BENCH_SECONDS ?? 60);
const HARNESS_CYCLES = Number(process.env.BENCH_HARNESS_CYCLES ?? 12);
const WRITE_KBPS = 5120;
const GOAL_LAG_S = 2;

interface CycleLine {
  event: string;
  lagSeconds?: number;
  error?: string;
  result?: { kind: string; bytesCovered: number; bytesShipped: number; durationMs: number; point: { id: string; time: string; committedAt: string } };
}

const now = () => performance.timeOrigin + performance.now();
const s = (ms: number) => (ms / 1000).toFixed(2);

/** Polls the guest's serial log: the writer's running total and when it was first seen. */
function sampleWriter(log: string): { samples: [number, number][]; stop: () => void } {
  const samples: [number, number][] = [];
  const timer = setInterval(() => {
    void readWriterLines(log).then((totals) => {
      const last = totals.at(-1);
      if (last !== undefined && last !== samples.at(-1)?.[1]) samples.push([now(), last]);
    });
  }, 250);
  return { samples, stop: () => clearInterval(timer) };
}

function rate(samples: [number, number][], from: number, to: number): number {
  const inside = samples.filter(([t]) => t >= from && t <= to);
  if (inside.length < 2) return NaN;
  const [t0, b0] = inside[0]!;
  const [t1, b1] = inside.at(-1)!;
  return (b1 - b0) / ((t1 - t0) / 1000);
}

/** One timed span of a harness cycle. */
interface Span {
  cycle: number;
  what: string;
  start: number;
  end: number;
}

async function main(cleanup: Cleanup): Promise<void> {
  await prepareMachine({ strace: 'strace', 'qemu-img': 'qemu-utils' });
  const machine = await describeMachine();
  const lab = await openLab(cleanup, 'cont');
  const vm = `test-bench-${lab.tag}`;
  const disk = join(lab.dir, 'vda.qcow2');
  await makeDisk(disk, vm, '1G');
  say(`booting writer ${vm} (write_kbps=${WRITE_KBPS})`);
  const log = await bootVm(lab, cleanup, vm, disk, `${LAB_CMDLINE} vmdr.mode=writer vmdr.write_kbps=${WRITE_KBPS}`);
  const { config, serve } = await startVmdr(lab, cleanup, [{ name: vm, continuous: true }]);
  const writer = sampleWriter(log);
  cleanup.add('stop sampling', async () => writer.stop());

  say('first sync (full)');
  const first = await vmdrJson(['sync', vm, '--config', config]);
  const firstResult = first.lines.find((l) => l.event === 'result') as { kind: string; durationMs: number; bytesShipped: number };

  // ---- the CLI as an operator runs it
  say(`vmdr sync --continuous --json for ${RUN_SECONDS} s`);
  const cycles: { seenAt: number; line: CycleLine }[] = [];
  const runStart = now();
  const child = spawn(process.execPath, [CLI, 'sync', vm, '--continuous', '--json', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.add('stop vmdr sync --continuous', async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      cycles.push({ seenAt: now(), line: JSON.parse(line) as CycleLine });
    } catch {
      /* not JSON: ignore */
    }
  });
  const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, sig) => resolve(code ?? sig)));
  await new Promise((r) => setTimeout(r, RUN_SECONDS * 1000));
  child.kill('SIGINT');
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 60_000))]);
  const runEnd = now();
  if (code === 'timeout') child.kill('SIGKILL');

  const ok = cycles.map((c) => c.line).filter((l) => l.event === 'cycle' && l.result);
  const failed = cycles.map((c) => c.line).filter((l) => l.event === 'cycle' && l.error);
  const lags = ok.map((l) => l.lagSeconds!).sort((a, b) => a - b);
  const durations = ok.map((l) => l.result!.durationMs / 1000).sort((a, b) => a - b);
  const covered = ok.map((l) => l.result!.bytesCovered).sort((a, b) => a - b);
  const points = ok.map((l) => ({ time: Date.parse(l.result!.point.time), committed: Date.parse(l.result!.point.committedAt) }));
  const staleness = points.slice(1).map((p, i) => (p.committed - points[i]!.time) / 1000).sort((a, b) => a - b);
  const writeRate = rate(writer.samples, runStart, runEnd);

  // ---- where a cycle's time goes: the harness
  say(`instrumented harness: ${HARNESS_CYCLES} cycles through plugin/replication/sync.ts${process.env.BENCH_STRACE === '1' ? ', vmdr serve under strace' : ''}`);
  // strace cannot use seccomp-bpf on an attached process: it stops `vmdr serve` and qemu-nbd at
  // every syscall and slows the receiver about twofold. Opt-in only (BENCH_STRACE=1), for the
  // receiver's child processes (qemu-img, qemu-nbd) and their order, not for their durations.
  const trace = join(lab.dir, 'serve.strace');
  const strace = process.env.BENCH_STRACE === '1'
    ? spawn('strace', ['-f', '-ttt', '-qq', '-e', 'trace=execve', '-o', trace, '-p', String(serve.child.pid)], { stdio: 'ignore' })
    : undefined;
  cleanup.add('stop strace', async () => {
    if (strace && strace.exitCode === null) strace.kill('SIGINT');
  });
  if (strace) await new Promise((r) => setTimeout(r, 1000));

  const { file, config: cfg } = await loadConfig(config);
  const protection = findProtection(cfg, file, vm);
  const state = StateStore.open(cfg.state.path);
  const sites = new SiteConnections(cfg, file);
  const receiver = await receiverFor(cfg, file, protection);
  cleanup.add('close harness connections', async () => {
    receiver.close();
    await sites.close();
    state.close();
  });
  const spans: Span[] = [];
  let cycle = 0;
  const span = async <T>(what: string, work: () => Promise<T>): Promise<T> => {
    const start = now();
    try {
      return await work();
    } finally {
      spans.push({ cycle, what, start, end: now() });
    }
  };
  let backupEnd = 0;
  let firstPlan = 0;
  const real = await sites.adapter('prod');
  const tracker = real.changeTracker!;
  // Every method of the change tracker timed under its own name (the interface may grow).
  const label: Record<string, string> = {
    listCheckpoints: 'libvirt: list checkpoints + their XML',
    checkpointNames: 'libvirt: list checkpoint names',
    deleteCheckpoint: 'libvirt: delete checkpoint',
    beginBackup: 'libvirt: domain XML (its disks) + backup begin',
  };
  const timedTracker = new Proxy(tracker, {
    get: (t, p) => {
      const v = Reflect.get(t, p, t) as unknown;
      if (typeof v !== 'function') return v;
      const fn = (v as (...a: unknown[]) => Promise<unknown>).bind(t);
      const name = label[String(p)] ?? `change tracker ${String(p)}`;
      if (p === 'beginBackup') {
        return async (...a: unknown[]) => {
          const session = (await span(name, () => fn(...a))) as BackupSession;
          backupEnd = now();
          return { ...session, end: () => span('libvirt: abort backup job', () => session.end()) };
        };
      }
      return (...a: unknown[]) => span(name, () => fn(...a));
    },
  }) as ChangeTracker;
  const adapter = new Proxy(real, { get: (t, p) => (p === 'changeTracker' ? timedTracker : Reflect.get(t, p, t)) }) as HypervisorAdapter;
  const timedSites = { adapter: async () => adapter } as unknown as SiteConnections;
  const timedReceiver = new Proxy(receiver, {
    get: (t, p) => {
      if (p === 'latestPoint') return (name: string) => span('HTTPS GET latest point', () => t.latestPoint(name));
      if (p === 'sendCycle') {
        return async (name: string, body: AsyncIterable<Buffer>, signal?: AbortSignal) => {
          const sendStart = now();
          let firstPull = 0;
          let lastPull = 0;
          const counted = (async function* () {
            for await (const chunk of body) {
              if (!firstPull) firstPull = now();
              lastPull = now();
              yield chunk;
            }
          })();
          const point = await t.sendCycle(name, counted, signal);
          const answered = now();
          if (firstPlan) spans.push({ cycle, what: 'NBD connect (handshake, meta contexts)', start: backupEnd, end: firstPlan });
          spans.push({ cycle, what: 'NBD block-status (extents) + plan', start: firstPlan || backupEnd, end: sendStart });
          spans.push({ cycle, what: 'HTTPS request start to first body byte pulled', start: sendStart, end: firstPull });
          spans.push({ cycle, what: 'NBD reads + zstd + HTTPS body (first to last byte)', start: firstPull, end: lastPull });
          spans.push({ cycle, what: 'receiver after last byte: flush, qemu-nbd stop, fsync, commit, retention', start: lastPull, end: answered });
          return point;
        };
      }
      const v = Reflect.get(t, p, t) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  }) as ReceiverClient;
  const cycleTotals: { ms: number; covered: number; lag: number }[] = [];
  for (cycle = 1; cycle <= HARNESS_CYCLES; cycle += 1) {
    backupEnd = 0;
    firstPlan = 0;
    const start = now();
    const onProgress = (p: Progress) => {
      if ((p.phase === 'plan' || p.phase === 'compare') && !firstPlan) firstPlan = now();
    };
    const result = await syncProtection(protection, { sites: timedSites, state, receiver: timedReceiver }, { onProgress });
    const end = now();
    spans.push({ cycle, what: 'whole cycle (syncProtection)', start, end });
    cycleTotals.push({ ms: end - start, covered: result.bytesCovered, lag: (end - result.point.time.getTime()) / 1000 });
  }
  if (strace) {
    strace.kill('SIGINT');
    await new Promise((r) => strace.once('exit', r));
  }

  // Receiver children from the strace: pid -> command, exec time, exit time.
  const children = new Map<string, { cmd: string; start: number; end?: number }>();
  for (const line of (await readFile(trace, 'utf8').catch(() => '')).split('\n')) {
    const m = /^(\d+)\s+([\d.]+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const [, pid, ts, rest] = m;
    const t = Number(ts) * 1000;
    const ex = /^execve\("([^"]+)", \[(.*?)\]/.exec(rest!);
    if (ex && / = 0$/.test(rest!)) {
      const argv = [...ex[2]!.matchAll(/"([^"]*)"/g)].map((a) => a[1]!);
      const cmd = argv[0]!.split('/').pop()!;
      children.set(pid!, { cmd: cmd === 'qemu-img' ? `qemu-img ${argv[1]}` : cmd, start: t });
    } else if (/^\+\+\+ (exited|killed)/.test(rest!) && children.has(pid!)) {
      children.get(pid!)!.end = t;
    }
  }
  for (const c of children.values()) {
    if (c.end === undefined) continue;
    const within = spans.find((x) => x.what === 'whole cycle (syncProtection)' && c.start >= x.start && c.start <= x.end);
    if (within) spans.push({ cycle: within.cycle, what: `receiver child: ${c.cmd} (spawn to exit)`, start: c.start, end: c.end });
  }

  // ---- report
  const byWhat = new Map<string, number[]>();
  for (const x of spans) {
    if (x.cycle < 1 || !(x.end > x.start)) continue;
    const perCycle = byWhat.get(x.what) ?? Array.from({ length: HARNESS_CYCLES }, () => 0);
    perCycle[x.cycle - 1]! += x.end - x.start;
    byWhat.set(x.what, perCycle);
  }
  const counts = new Map<string, number>();
  for (const x of spans) counts.set(x.what, (counts.get(x.what) ?? 0) + 1);
  const med = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);
  const whole = byWhat.get('whole cycle (syncProtection)') ?? [];
  const breakdown = [...byWhat.entries()]
    .map(([what, xs]) => [what, (counts.get(what)! / HARNESS_CYCLES).toFixed(1), s(med(xs)), s(Math.max(...xs)), `${((100 * med(xs)) / med(whole)).toFixed(0)} %`] as string[])
    .sort((a, b) => Number(b[2]) - Number(a[2]));

  const out: string[] = [];
  out.push(`## Continuous-mode benchmark run of ${machine.date!.slice(0, 10)}`, '');
  out.push('Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '');
  out.push(
    `Writer guest: 1 vCPU TCG, 1 GiB ext4 disk, \`vmdr.write_kbps=${WRITE_KBPS}\`; real rate over the run from its serial log: ` +
      `${(writeRate / MiB).toFixed(2)} MiB/s (${((writeRate / 1e6) * 1).toFixed(2)} MB/s; goal 5 MB/s). First sync: ${firstResult.kind}, ${s(firstResult.durationMs)} s, ${mib(firstResult.bytesShipped)} shipped.`,
    '',
  );
  out.push(`\`vmdr sync ${vm} --continuous --json\` for ${RUN_SECONDS} s: ${ok.length} committed cycles, ${failed.length} failed${failed.length ? ` (${failed.map((f) => f.error).join('; ')})` : ''}; exit ${String(code)}${stderr.trim() ? `, stderr: ${stderr.trim().split('\n').pop()}` : ''}.`, '');
  out.push(
    table(
      ['measure', 'p50', 'p95', 'max', 'goal', 'met'],
      [
        ['lag at commit (lagSeconds)', s(percentile(lags, 50) * 1000), s(percentile(lags, 95) * 1000), s((lags.at(-1) ?? NaN) * 1000), `≤ ${GOAL_LAG_S} s`, lags.length && lags.at(-1)! <= GOAL_LAG_S ? 'yes' : 'no'],
        ['cycle duration (s)', s(percentile(durations, 50) * 1000), s(percentile(durations, 95) * 1000), s((durations.at(-1) ?? NaN) * 1000), '', ''],
        ['worst staleness: point instant → next commit (s)', s(percentile(staleness, 50) * 1000), s(percentile(staleness, 95) * 1000), s((staleness.at(-1) ?? NaN) * 1000), `≤ ${GOAL_LAG_S} s`, staleness.length && staleness.at(-1)! <= GOAL_LAG_S ? 'yes' : 'no'],
        ['bytes covered per cycle', mib(percentile(covered, 50)), mib(percentile(covered, 95)), mib(covered.at(-1) ?? NaN), '', ''],
      ],
    ),
    '',
  );
  out.push(`### Where a cycle's time goes (${HARNESS_CYCLES} instrumented cycles, writer still writing)`, '');
  out.push(
    `Cycle: median ${s(med(cycleTotals.map((c) => c.ms)))} s, max ${s(Math.max(...cycleTotals.map((c) => c.ms)))} s; lag at commit median ${med(cycleTotals.map((c) => c.lag)).toFixed(2)} s; ` +
      `covered median ${mib(med(cycleTotals.map((c) => c.covered)))}. Spans overlap where work runs concurrently (receiver children run inside the HTTPS request).`,
    '',
  );
  out.push(table(['phase', 'calls/cycle', 'median s/cycle', 'max s', 'share of median cycle'], breakdown), '');
  process.stdout.write(`${out.join('\n')}\n`);
  process.stdout.write(`\n<!-- raw: ${JSON.stringify({ lags, durations, staleness, writeRate, samples: writer.samples.length, cycleTotals })} -->\n`);
}

runBench('bench:continuous', main);
