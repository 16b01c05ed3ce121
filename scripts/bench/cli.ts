/**
 * `npm run bench:cli` (issue 11): how long the CLI takes for what an operator types most, against
 * `virsh list`, the command a libvirt operator already knows. One run, one machine, one lab VM on
 * an isolated network of its own, protected onto this machine's libvirtd (`vmdr protect`, then
 * `vmdr serve --no-replicate` as its DR receiver). Each command is a process started and awaited
 * the same way (its wall time, spawn to exit), warmed up first, then run in turns so the machine's
 * noise falls on all of them alike; the median of the runs is reported, with the fastest beside it
 * and the mean CPU time of the command's process tree (less swayed by a busy machine than wall time):
 *   - `vmdr --help`: start-up alone, nothing opened;
 *   - `vmdr status --json`: config, state file, both sites' VMs, the newest point;
 *   - `vmdr sync VM --json`: one incremental cycle of an idle guest (checkpoint, backup, ship,
 *     commit), handed to the running `vmdr serve`, and again with `--no-daemon` (in the CLI);
 *   - `virsh -c qemu:///system list` (the peer) and an empty `node` (Node's own start, for reference).
 * Prints a markdown report on stdout (progress on stderr) and removes everything it made, also after
 * a failure or Ctrl-C. `--no-setup` skips scripts/lab/setup on a machine already set up.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDisk } from '../lab/production.js';
import { bootVm, CLI, describeMachine, exec, openLab, percentile, prepareMachine, runBench, say, startVmdr, table, timed, URI, type Cleanup } from './lab.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const WARMUP = 2;

interface Command {
  name: string;
  argv: string[];
  /** What must hold of its output, so a command that failed fast is not timed as a fast one. */
  check: (stdout: string) => void;
}

/**
 * CPU time of this process's children that ended (and were reaped), with theirs: cutime + cstime
 * of /proc/self/stat, in clock ticks of 10 ms (USER_HZ 100 on Linux).
 */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

interface Run {
  ms: number;
  cpuMs: number;
}

/** Runs `argv` once; resolves with its wall and CPU time, rejects with its stderr when it exits non-zero. */
async function once(command: Command): Promise<Run> {
  const cpu0 = childrenCpuMs();
  const { ms, value } = await timed(
    () =>
      new Promise<string>((resolve, reject) => {
        const [file, ...args] = command.argv;
        execFile(file!, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${command.name}: ${err.message.split('\n')[0]} ${stderr.trim()}`)) : resolve(stdout),
        );
      }),
  );
  const cpuMs = childrenCpuMs() - cpu0;
  command.check(value);
  return { ms, cpuMs };
}

const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);

async function main(cleanup: Cleanup): Promise<void> {
  if (!process.argv.includes('--no-setup')) await prepareMachine({});
  const machine = await describeMachine();
  const lab = await openLab(cleanup, 'cli');
  const vm = `test-bench-${lab.tag}`;
  const disk = join(lab.dir, 'vda.qcow2');
  await makeDisk(disk, vm);
  say(`booting ${vm}`);
  await bootVm(lab, cleanup, vm, disk);
  const { config } = await startVmdr(lab, cleanup, [{ name: vm }]);
  cleanup.add(`remove target ${vm}-dr`, () => exec('virsh', ['-c', URI, 'undefine', `${vm}-dr`, '--nvram']).catch(() => undefined));
  say(`vmdr protect ${vm} (pre-stages the target, first sync)`);
  await exec(process.execPath, [CLI, 'protect', vm, '--config', config, '--json']);

  const vmdr = (...args: string[]) => [process.execPath, CLI, ...args];
  const json = (stdout: string) => stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown);
  const commands: Command[] = [
    { name: 'vmdr --help', argv: vmdr('--help'), check: (out) => void (out.includes('vmdr sync') || fail('no usage printed')) },
    {
      name: 'vmdr status --json',
      argv: vmdr('status', '--json', '--config', config),
      check: (out) => void ((json(out)[0] as { protection: string }[]).some((r) => r.protection === vm) || fail('protection missing')),
    },
    ...[[], ['--no-daemon']].map((extra) => ({
      name: `vmdr sync VM --json${extra.length ? ` ${extra.join(' ')}` : ' (handed to vmdr serve)'}`,
      argv: vmdr('sync', vm, '--json', ...extra, '--config', config),
      check: (out: string) => void (json(out).some((l) => (l as { kind?: string }).kind === 'incremental') || fail('not an incremental sync')),
    })),
    { name: 'virsh list (peer)', argv: ['virsh', '-c', URI, 'list'], check: (out) => void (out.includes(vm) || fail('VM not listed')) },
    { name: 'node, empty script (reference)', argv: [process.execPath, '-e', '0'], check: () => undefined },
  ];
  const runs = new Map<Command, Run[]>(commands.map((c) => [c, []]));
  say(`${WARMUP} warm-up runs, then ${RUNS} timed runs of each, in turns`);
  for (let i = 0; i < WARMUP + RUNS; i += 1) {
    for (const c of commands) {
      const run = await once(c);
      if (i >= WARMUP) runs.get(c)!.push(run);
    }
  }
  const wall = (c: Command) => runs.get(c)!.map((r) => r.ms);
  const cpu = (c: Command) => runs.get(c)!.reduce((sum, r) => sum + r.cpuMs, 0) / RUNS;

  const peer = median(wall(commands.find((c) => c.argv[0] === 'virsh')!));
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  const out: string[] = [];
  out.push(`## CLI start-up benchmark run of ${machine.date!.slice(0, 10)}`, '');
  out.push('Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '');
  out.push(
    `Each command ${RUNS} times after ${WARMUP} warm-up runs, in turns. Wall: the process, spawn to exit. ` +
      "CPU: user + system of the process and its children (virsh, qemu-img), not the receiver's (`vmdr serve`) work for a sync.",
    '',
  );
  out.push(
    table(
      ['command', 'wall, median', 'wall, fastest', 'median / virsh list', 'CPU, mean'],
      commands.map((c) => [c.name, ms(median(wall(c))), ms(Math.min(...wall(c))), `${(median(wall(c)) / peer).toFixed(1)} ×`, ms(cpu(c))]),
    ),
    '',
  );
  process.stdout.write(`${out.join('\n')}\n`);
  process.stdout.write(`\n<!-- raw (wall ms): ${JSON.stringify(Object.fromEntries(commands.map((c) => [c.name, wall(c).map((t) => Math.round(t))])))} -->\n`);
}

function fail(why: string): never {
  throw new Error(why);
}

runBench('bench:cli', main);
