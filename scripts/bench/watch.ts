/**
 * `npm run bench:watch` (issue 15): how long the watch takes to act on a dead source, on the lab.
 * The lab guest protected onto a pre-staged target, watched by `vmdr serve` with policy automatic,
 * interval 1 s, missed 3 (one host plays both sites: the source site is named qemu+unix:///system
 * so the config's own-host guard lets `automatic` through). Each repetition kills the source
 * (`virsh destroy`) at whatever moment of a beat it falls, as a real failure would. Measured from the kill: the watch's down event, the failover
 * started (its failing-over event) and the target healthy (failed-over, the run's health check
 * passed), and the suspect event before them (told by libvirt's event of the VM stopping, when
 * the watch hears it). BENCH_WATCH_AFTER (e.g. 2s) sets the watch's `after` (default interval ×
 * missed). Between repetitions: the failover reverted, the source booted, the hold cleared.
 * Runs scripts/lab/setup first; prints a markdown report on stdout (progress on stderr) and
 * removes what it made, also after a failure or Ctrl-C. No traffic leaves the machine.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { runVmdr, GUEST_READY, waitForSerialLine } from '../../test/helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, serveAndRun } from '../../test/helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../../test/helpers/vmdr-serve.js';
import { waitForWatchLine } from '../../test/helpers/watch-lines.js';
import { describeMachine, median, prepareMachine, runBench, say, seconds, table } from './lab.js';

const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const INTERVAL_MS = 1000;
const MISSED = 3;
const TARGET_MS = INTERVAL_MS * MISSED + 1000;
const DOUBLE_TAKE_MS = 5 * 5000;
const AFTER = process.env.BENCH_WATCH_AFTER;

interface Sample {
  /** The destroy call returned: the VM is off (libvirt waits for QEMU to exit). */
  offMs: number;
  suspectMs: number;
  downMs: number;
  startedMs: number;
  healthyMs: number;
}

runBench('bench:watch', async (cleanup) => {
  await prepareMachine({});
  const machine = await describeMachine();
  const watch = `policy: automatic, interval: ${INTERVAL_MS / 1000}s, missed: ${MISSED}${AFTER ? `, after: ${AFTER}` : ''}`;
  say(`lab guest, DR network and config (${watch})`);
  const lab = await createProtectedLabVm('benchwatch', { settings: [`watch: { ${watch} }`] });
  cleanup.add('lab VM', () => destroyProtectedLabVm(lab.vm, lab.drNetwork));
  const { vm, config } = lab;
  await writeFile(config, (await readFile(config, 'utf8')).replace('{ name: prod, uri: "qemu:///system" }', '{ name: prod, uri: "qemu+unix:///system" }'));
  const vmdr = async (...args: string[]) => {
    const r = await runVmdr([...args, '--config', config]);
    if (r.code !== 0) throw new Error(`vmdr ${args.join(' ')}: ${r.stderr.trim()}`);
  };
  let serve: ServeProcess | undefined = await serveAndRun(config, [['target', 'provision'], ['protect', vm.name]]);
  cleanup.add('vmdr serve', () => serve?.stop() ?? Promise.resolve());
  const samples: Sample[] = [];
  for (let i = 1; i <= REPEAT; i++) {
    serve ??= await startServe(config, { args: ['--no-replicate'] });
    await waitForWatchLine(serve, 0, 'healthy', 15_000);
    const from = serve.events.length;
    say(`repetition ${i}/${REPEAT}: virsh destroy ${vm.name}`);
    const killed = Date.now();
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const offMs = Date.now() - killed;
    const suspect = await waitForWatchLine(serve, from, 'suspect', 15_000);
    const down = await waitForWatchLine(serve, from, 'down', 15_000);
    const started = await waitForWatchLine(serve, from, 'failing-over', 15_000);
    const done = await waitForWatchLine(serve, from, 'failed-over', 300_000);
    const sample = { offMs, suspectMs: Date.parse(suspect.at) - killed, downMs: Date.parse(down.at) - killed, startedMs: Date.parse(started.at) - killed, healthyMs: Date.parse(done.at) - killed };
    say(`  off ${seconds(sample.offMs)}, suspect ${seconds(sample.suspectMs)} (${suspect.detail}), down ${seconds(sample.downMs)}, failover started ${seconds(sample.startedMs)}, target healthy ${seconds(sample.healthyMs)}`);
    samples.push(sample);
    await serve.stop();
    serve = undefined;
    await vmdr('failover', vm.name, '--revert');
    if ((await vm.adapter.getVm(vm.name)).powerState !== 'running') await vm.adapter.start(vm.name);
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 90_000 });
    await vmdr('watch', 'clear', vm.name);
  }
  const rows = samples.map((s, i) => [i + 1, seconds(s.offMs), seconds(s.suspectMs), seconds(s.downMs), seconds(s.startedMs), seconds(s.healthyMs)]);
  const med = (f: (s: Sample) => number) => seconds(median(samples.map(f)));
  const worst = Math.max(...samples.map((s) => s.startedMs));
  process.stdout.write(
    [
      '## bench:watch: a dead source to its failover (issue 15)',
      '',
      `Watch { ${watch} }; the source killed with virsh destroy at whatever moment of a beat it fell; ${REPEAT} repetitions.`,
      '',
      table(['run', 'kill → off (destroy returned)', 'kill → suspect', 'kill → down', 'kill → failover started', 'kill → target healthy'], [...rows, ['median', med((s) => s.offMs), med((s) => s.suspectMs), med((s) => s.downMs), med((s) => s.startedMs), med((s) => s.healthyMs)]]),
      '',
      `Target: failover started within interval × missed + 1 s = ${seconds(TARGET_MS)} (worst here ${seconds(worst)}: ${worst <= TARGET_MS ? 'met' : 'MISSED'}). ` +
        `Double-Take's default failure detection: 5 missed × 5 s = ${seconds(DOUBLE_TAKE_MS)} before it would begin.`,
      '',
      'Machine:',
      '',
      ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`),
      '',
    ].join('\n'),
  );
});
