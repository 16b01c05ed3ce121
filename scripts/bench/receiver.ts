/**
 * `npm run bench:receiver` (issue 11): the DR side alone, without a VM or a source host, so a
 * change to the receiver can be measured A/B in a minute. `vmdr serve --no-replicate` (the real
 * daemon, from dist/) takes delta streams encoded beforehand in this process and sent with the
 * source side's ReceiverClient over HTTPS on loopback, into a 1 GiB disk:
 *   - a full cycle of 768 MiB of data (4 MiB frames, half random, half log-like text, as the
 *     replication bench's disk) and 256 MiB of zero frames, against nbdcopy of the same bytes from
 *     a local raw file into a qcow2 through a captive qemu-nbd (the write floor on this machine);
 *   - incremental cycles of 160 scattered 64 KiB frames (32 KiB random + 32 KiB text each, as the
 *     replication bench's writes), each sent VMDR_BENCH_GAP_MS (100) after the previous answer, as
 *     a loop's sender does after its capture.
 * Beside each, the CPU the receiver spent (vmdr serve, and the qemu-img and qemu-nbd it ran).
 * VMDR_BENCH_CYCLES sets the number of incremental cycles (default 20); VMDR_BENCH_NODE_FLAGS gives
 * vmdr serve's node flags (`--cpu-prof --cpu-prof-dir=DIR` for a CPU profile). Prints markdown on stdout.
 */
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadIdentity } from '../../plugin/sites/identity.js';
import { asThisSite } from '../../plugin/sites/peer-connect.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { ReceiverClient } from '../../plugin/replication/sender/receiver-client.js';
import type { RecoveryPoint } from '../../plugin/replication/replica/store.js';
import { chunks, encodeStream, receiverConfigYaml, streamBytes, streamHeader, type Op } from '../../test/helpers/receiver-lab.js';
import { startServe } from '../../test/helpers/vmdr-serve.js';
import { Cleanup, GiB, KiB, MiB, exec, percentile, prng, runBench, say, seconds, table, text } from './lab.js';

const PROTECTION = 'bench-rx';
const DISK = { name: 'vda', sizeBytes: GiB };
const FRAME = 4 * MiB;
const DATA_BYTES = 768 * MiB;
const WRITES = 160;
const WRITE = 64 * KiB;
const CYCLES = Number(process.env['VMDR_BENCH_CYCLES'] ?? 20);
/**
 * Between an answer and the next cycle's first byte a loop's sender takes its checkpoint, starts
 * the backup job and reads the extents (0.2–0.5 s in docs/benchmarks.md's phase table): the
 * receiver's work after an answer (retention, the next overlays) has that long.
 */
const GAP_MS = Number(process.env['VMDR_BENCH_GAP_MS'] ?? 100);

function randomBytes(r: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE(Math.floor(r() * 0x1_0000_0000), i);
  return b;
}

/** 768 MiB of data frames (random and text alternating) from offset 0, then zero frames to the end. */
function fullOps(): Op[] {
  const r = prng(11);
  const ops: Op[] = [];
  for (let offset = 0, i = 0; offset < DATA_BYTES; offset += FRAME, i++) {
    ops.push({ kind: 'data', disk: 0, offset, data: i % 2 === 0 ? randomBytes(r, FRAME) : text(FRAME, i) });
  }
  ops.push({ kind: 'zero', disk: 0, offset: DATA_BYTES, length: DISK.sizeBytes - DATA_BYTES });
  return ops;
}

/** 160 distinct 64 KiB-aligned offsets in [64 MiB, 1 GiB), in disk order as a bitmap-driven sender reads them. */
function incrementalOps(seed: number): Op[] {
  const r = prng(seed);
  const offsets = new Set<number>();
  while (offsets.size < WRITES) offsets.add(64 * MiB + Math.floor(r() * ((DISK.sizeBytes - 64 * MiB) / WRITE)) * WRITE);
  return [...offsets]
    .sort((a, b) => a - b)
    .map((offset, i) => ({ kind: 'data' as const, disk: 0, offset, data: Buffer.concat([randomBytes(r, WRITE / 2), text(WRITE / 2, seed * 1000 + i)]) }));
}

/**
 * CPU seconds so far of a process (user + system) and of its children it has reaped (qemu-img,
 * qemu-nbd), from /proc/PID/stat, in clock ticks of 10 ms.
 */
async function cpuOf(pid: number): Promise<{ own: number; children: number }> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /, '').split(' ').map(Number);
  // After the ")": state is field 3, so utime (14) is at index 11.
  return { own: (fields[11]! + fields[12]!) / 100, children: (fields[13]! + fields[14]!) / 100 };
}

async function main(cleanup: Cleanup): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'test-vmdr-bench-receiver-'));
  cleanup.add(`remove ${root}`, () => rm(root, { recursive: true, force: true }));
  const port = await freeLoopbackPort();
  const config = join(root, 'vmdr.yaml');
  const credentials = join(root, 'receiver');
  await writeFile(
    config,
    receiverConfigYaml({
      statePath: join(root, 'state', 'vmdr.db'),
      storage: join(root, 'replicas'),
      listen: `127.0.0.1:${port}`,
      credentials,
      // Retention as the replication bench's protections have it: merges run beside the cycles.
      protections: [{ name: PROTECTION, keep: 24 }],
    }),
  );
  const nodeFlags = process.env['VMDR_BENCH_NODE_FLAGS'];
  // Node refuses --cpu-prof in NODE_OPTIONS: the daemon's node is exec'ed with the flags by sh.
  const serve = await startServe(config, nodeFlags ? { via: ['sh', '-c', `exec "$0" ${nodeFlags} "$@"`] } : {});
  // SIGTERM to the daemon itself (with `via`, ServeProcess.stop signals a child of the daemon, here a qemu-nbd).
  cleanup.add('stop vmdr serve', async () => {
    serve.child.kill('SIGTERM');
    await serve.exited;
  });
  const client = new ReceiverClient(`https://127.0.0.1:${port}`, 'dr', asThisSite(await loadIdentity(credentials)));
  cleanup.add('close the client', async () => client.close());

  say('encoding the full stream (768 MiB of data)');
  const full = encodeStream(streamHeader({ protection: PROTECTION, disks: [DISK], base: null, n: 1 }), fullOps());
  const fullWire = streamBytes(full).reduce((n, b) => n + b.length, 0);
  // The same bytes as a raw file, for nbdcopy.
  const raw = join(root, 'full.raw');
  await exec('truncate', ['-s', String(DISK.sizeBytes), raw]);
  {
    const h = await open(raw, 'r+');
    for (const op of fullOps()) if (op.kind === 'data') await h.write(op.data, 0, op.data.length, op.offset);
    await h.close();
  }

  const pid = serve.child.pid!;
  say('full cycle');
  let cpu = await cpuOf(pid);
  let t0 = performance.now();
  let point: RecoveryPoint = await client.sendCycle(PROTECTION, chunks(streamBytes(full)));
  const fullMs = performance.now() - t0;
  let after = await cpuOf(pid);
  const fullCpu = { own: after.own - cpu.own, children: after.children - cpu.children };

  say('nbdcopy of the same bytes into a qcow2 through qemu-nbd');
  const copy = join(root, 'copy.qcow2');
  await exec('qemu-img', ['create', '-q', '-f', 'qcow2', copy, String(DISK.sizeBytes)]);
  t0 = performance.now();
  await exec('nbdcopy', [raw, '--', '[', 'qemu-nbd', '-f', 'qcow2', '--cache=writeback', copy, ']']);
  const nbdcopyMs = performance.now() - t0;
  await rm(copy);

  say(`${CYCLES} incremental cycles of ${WRITES} × 64 KiB`);
  const cycleMs: number[] = [];
  const streams = Array.from({ length: CYCLES }, (_, i) => incrementalOps(i + 2));
  cpu = await cpuOf(pid);
  for (const [i, ops] of streams.entries()) {
    const stream = encodeStream(streamHeader({ protection: PROTECTION, disks: [DISK], base: point.id, n: i + 2 }), ops);
    await new Promise((r) => setTimeout(r, GAP_MS));
    t0 = performance.now();
    point = await client.sendCycle(PROTECTION, chunks(streamBytes(stream)));
    cycleMs.push(performance.now() - t0);
  }
  after = await cpuOf(pid);
  // Retention (keep 24) merges on the later cycles, after each answer: its CPU counts here too.
  const cycleCpu = { own: (after.own - cpu.own) / CYCLES, children: (after.children - cpu.children) / CYCLES };

  const throughput = (ms: number) => `${(DISK.sizeBytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`;
  const stat = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return [percentile(s, 50), percentile(s, 95), s.at(-1)!].map((ms) => `${ms.toFixed(0)} ms`);
  };
  console.log(
    table(
      ['full cycle (1 GiB disk, 768 MiB data)', 'time', 'throughput', 'ratio to nbdcopy', 'receiver CPU (vmdr serve + qemu-img, qemu-nbd)'],
      [
        [`vmdr serve (${(fullWire / MiB).toFixed(0)} MiB on the wire)`, seconds(fullMs), throughput(fullMs), `${(nbdcopyMs / fullMs).toFixed(2)} ×`, `${fullCpu.own.toFixed(2)} s + ${fullCpu.children.toFixed(2)} s`],
        ['nbdcopy raw file → qemu-nbd qcow2', seconds(nbdcopyMs), throughput(nbdcopyMs), '1.00', ''],
      ],
    ),
  );
  console.log();
  console.log(
    table(
      [`incremental (${WRITES} × 64 KiB), ${CYCLES} cycles ${GAP_MS} ms apart`, 'p50', 'p95', 'max', 'receiver CPU per cycle'],
      [['whole cycle (client)', ...stat(cycleMs), `${(cycleCpu.own * 1000).toFixed(0)} ms + ${(cycleCpu.children * 1000).toFixed(0)} ms`]],
    ),
  );
}

runBench('bench:receiver', main);
