/**
 * `npm run bench:cli` (issue 11): how long the CLI takes for what an operator types most, against
 * `virsh list`, the command a libvirt operator already knows. One run, one machine, one lab VM on
 * an isolated network of its own, protected onto this machine's libvirtd (`vmdr protect`, then
 * `vmdr serve --no-replicate` as its DR receiver). Each command is a process started and awaited
 * the same way (its wall time, spawn to exit), warmed up first, then run in turns so the machine's
 * noise falls on all of them alike; the median of the runs is reported, with the fastest beside it:
 *   - `vmdr --help`: start-up alone, nothing opened;
 *   - `vmdr status --json`: config, state file, both sites' VMs, the newest point;
 *   - `vmdr sync VM --json`: one incremental cycle of an idle guest (checkpoint, backup, ship, commit);
 *   - `virsh -c qemu:///system list` (the peer) and an empty `node` (Node's own start, for reference).
 * Prints a markdown report on stdout (progress on stderr) and removes everything it made, also after
 * a failure or Ctrl-C. `--no-setup` skips scripts/lab/setup on a machine already set up.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { makeDisk } from '../lab/production.js';
import { bootVm, CLI, describeMachine, exec, openLab, prepareMachine, runBench, say, startVmdr, table, timed, URI, type Cleanup } from './lab.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const WARMUP = 2;

interface Command {
  name: string;
  argv: string[];
  /** What must hold of its output, so a command that failed fast is not timed as a fast one. */
  check: (stdout: string) => void;
}

/** Runs `argv` once; resolves with its wall time, rejects with its stderr when it exits non-zero. */
function once(command: Command): Promise<number> {
  return timed(
    () =>
      new Promise<string>((resolve, reject) => {
        const [file, ...args] = command.argv;
        execFile(file!, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${command.name}: ${err.message.split('\n')[0]} ${stderr.trim()}`)) : resolve(stdout),
        );
      }),
  ).then(({ ms, value }) => {
    command.check(value);
    return ms;
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

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
    {
      name: `vmdr sync VM --json`,
      argv: vmdr('sync', vm, '--json', '--config', config),
      check: (out) => void (json(out).some((l) => (l as { kind?: string }).kind === 'incremental') || fail('not an incremental sync')),
    },
    { name: 'virsh list (peer)', argv: ['virsh', '-c', URI, 'list'], check: (out) => void (out.includes(vm) || fail('VM not listed')) },
    { name: 'node, empty script (reference)', argv: [process.execPath, '-e', '0'], check: () => undefined },
  ];
  const times = new Map<Command, number[]>(commands.map((c) => [c, []]));
  say(`${WARMUP} warm-up runs, then ${RUNS} timed runs of each, in turns`);
  for (let i = 0; i < WARMUP + RUNS; i += 1) {
    for (const c of commands) {
      const ms = await once(c);
      if (i >= WARMUP) times.get(c)!.push(ms);
    }
  }

  const peer = median(times.get(commands[3]!)!);
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  const out: string[] = [];
  out.push(`## CLI start-up benchmark run of ${machine.date!.slice(0, 10)}`, '');
  out.push('Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '');
  out.push(`Each command ${RUNS} times after ${WARMUP} warm-up runs, in turns; wall time of the process, spawn to exit.`, '');
  out.push(
    table(
      ['command', 'median', 'fastest', 'median / virsh list'],
      commands.map((c) => {
        const t = times.get(c)!;
        return [c.name, ms(median(t)), ms(Math.min(...t)), `${(median(t) / peer).toFixed(1)} ×`];
      }),
    ),
    '',
  );
  process.stdout.write(`${out.join('\n')}\n`);
  process.stdout.write(`\n<!-- raw: ${JSON.stringify(Object.fromEntries(commands.map((c) => [c.name, times.get(c)!.map((t) => Math.round(t))])))} -->\n`);
}

function fail(why: string): never {
  throw new Error(why);
}

runBench('bench:cli', main);
