/**
 * `npm run bench:pipeline` (issue 11): the source side's data path alone, without a VM or libvirt,
 * for A/B work on the sender: the replication bench's 1 GiB disk (48 × 16 MiB files, half random,
 * half log-like text) served read-only by qemu-nbd on loopback, shipped as one full cycle
 * (NbdClient → DeltaStreamEncoder → HTTPS) to a real receiver (replica store, qemu-nbd, SQLite) in
 * a child process, against nbdcopy of the same export into a qcow2 through qemu-nbd, in the same
 * run. `--compression off|auto`, `--rounds N`, `--incremental` (an incremental's shape instead:
 * the 160 scattered 64 KiB granules of the replication bench), `--no-peer` (vmdr only), `--sink` (a receiver that
 * only reads the body: the sender's own ceiling), `--profile DIR` (the receiver's CPU profile; run
 * the script with `node --import tsx --cpu-prof` for the sender's). VMDR_BENCH_DISK=FILE reuses a
 * disk made earlier (the script never writes to it). Traffic stays on loopback. Prints one line
 * per run on stdout; everything it made is removed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { deltaStreamBody } from '../../plugin/replication/capture/delta-body.js';
import { ALLOCATION_CONTEXT, opBytes, planFull, planRanges } from '../../plugin/replication/capture/extents.js';
import { NbdClient } from '../../plugin/replication/nbd/client.js';
import { ReceiverClient } from '../../plugin/replication/sender/receiver-client.js';
import { DeltaStreamEncoder } from '../../plugin/replication/stream/encode.js';
import { startPackWorkersFor } from '../../plugin/replication/stream/pack-pool.js';
import { ensureIdentity } from '../../plugin/sites/identity.js';
import { asThisSite } from '../../plugin/sites/peer-connect.js';
import { Cleanup, exec, GiB, makeDataDisk, MiB, runBench, say, timed } from './lab.js';
import { qemuNbd } from '../../test/helpers/nbd-servers.js';

const PROTECTION = 'bench-pipeline';
/** An incremental's shape: the replication bench's 160 granules of 64 KiB, scattered over [64 MiB, 1 GiB). */
const SCATTERED = Array.from({ length: 160 }, (_, i) => ({ offset: 64 * 1024 * 1024 + ((i * 7919) % 15360) * 65536, length: 65536 })).sort((a, b) => a.offset - b.offset);

/** The child: a receiver as `vmdr serve` runs it, in its own process (its own core, as on a DR host). */
async function receiverChild(): Promise<void> {
  if (process.argv.includes('--sink')) return sinkChild();
  const { startTestReceiver } = await import('../../test/helpers/receiver-instance.js');
  const receiver = await startTestReceiver([{ name: PROTECTION, keep: 1 }], 'test-vmdr-pipeline-');
  process.stdout.write(`${JSON.stringify({ url: receiver.url, root: receiver.root })}\n`);
  process.stdin.resume();
  process.stdin.once('end', () => void receiver.close().finally(() => process.exit(0)));
}

/** A receiver that reads the body and keeps nothing: the sender's own ceiling. */
async function sinkChild(): Promise<void> {
  const { createServer } = await import('node:https');
  const root = await mkdtemp(join(tmpdir(), 'test-vmdr-pipeline-'));
  const id = await ensureIdentity(join(root, 'receiver'), 'dr');
  const server = createServer({ cert: id.cert, key: id.key, ca: id.cert, requestCert: true }, (req, res) => {
    let bytes = 0;
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      const now = new Date().toISOString();
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(req.method === 'GET' ? { point: null } : { point: { id: 'rp-sink', seq: 1, protection: PROTECTION, checkpoint: 'x', time: now, committedAt: now, dataBytes: bytes, zeroBytes: 0 } }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  process.stdout.write(`${JSON.stringify({ url: `https://127.0.0.1:${(server.address() as { port: number }).port}`, root })}\n`);
  process.stdin.resume();
  process.stdin.once('end', () => void rm(root, { recursive: true, force: true }).finally(() => process.exit(0)));
}

async function startReceiverProcess(cleanup: Cleanup, profileDir?: string, sink = false): Promise<{ client: ReceiverClient }> {
  const args = ['--import', 'tsx', ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), import.meta.filename, '--receiver', ...(sink ? ['--sink'] : [])];
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  cleanup.add('receiver process', async () => {
    child.stdin!.end();
    await new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once('exit', resolve)));
  });
  const line = await new Promise<string>((resolve, reject) => {
    let got = '';
    child.stdout!.on('data', (c: Buffer) => {
      got += c.toString('utf8');
      if (got.includes('\n')) resolve(got.slice(0, got.indexOf('\n')));
    });
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
  });
  const { url, root } = JSON.parse(line) as { url: string; root: string };
  const credentials = await ensureIdentity(join(root, 'receiver'), 'dr');
  const client = new ReceiverClient(url, 'dr', asThisSite(credentials));
  cleanup.add('receiver client', async () => client.close());
  return { client };
}

async function main(cleanup: Cleanup): Promise<void> {
  const { values } = parseArgs({ options: { compression: { type: 'string', default: 'auto' }, rounds: { type: 'string', default: '1' }, 'no-peer': { type: 'boolean' }, sink: { type: 'boolean' }, incremental: { type: 'boolean' }, profile: { type: 'string' } } });
  const dir = await mkdtemp(join(tmpdir(), 'test-vmdr-pipeline-'));
  cleanup.add('scratch dir', () => rm(dir, { recursive: true, force: true }));
  let disk = process.env.VMDR_BENCH_DISK;
  if (!disk) {
    disk = join(dir, 'vda.qcow2');
    say(`building the 1 GiB disk with 768 MiB of files in ${dir}`);
    await makeDataDisk(dir, disk, 'pipeline', GiB, Array.from({ length: 48 }, (_, i) => (i % 2 === 0 ? 'random' : 'text')));
  }
  const server = await qemuNbd(disk, { transport: 'tcp', exportName: 'vda', readOnly: true });
  cleanup.add('qemu-nbd', () => server.stop());
  const { client: receiver } = await startReceiverProcess(cleanup, values.profile, values.sink);
  const level = values.compression === 'off' ? 0 : 1;
  for (let round = 0; round < Number(values.rounds); round += 1) {
    if (!values['no-peer']) {
      const target = join(dir, 'nbdcopy.qcow2');
      const peer = await timed(async () => {
        await exec('qemu-img', ['create', '-q', '-f', 'qcow2', target, String(GiB)]);
        await exec('nbdcopy', [server.uri, '--', '[', 'qemu-nbd', '-f', 'qcow2', target, ']']);
      });
      await rm(target);
      process.stdout.write(`nbdcopy → qcow2: ${(peer.ms / 1000).toFixed(2)} s, ${(GiB / MiB / (peer.ms / 1000)).toFixed(0)} MiB/s\n`);
    }
    const cycle = async (kind: 'full' | 'incremental') => {
      const nbd = await NbdClient.connect(server.listen, { exportName: 'vda', metaContexts: [ALLOCATION_CONTEXT] });
      const allocation = await nbd.extents(ALLOCATION_CONTEXT);
      const ops = kind === 'full' ? planFull(allocation) : planRanges(SCATTERED, allocation);
      if (level !== 0) startPackWorkersFor(opBytes(ops, 'data'));
      const latest = await receiver.latestPoint(PROTECTION);
      const header = {
        session: randomUUID(), protection: PROTECTION, checkpoint: `vmdr-${PROTECTION}-${Date.now()}`, since: kind === 'full' ? null : (latest?.checkpoint ?? 'none'),
        base: latest?.id ?? null, kind, disks: [{ name: 'vda', sizeBytes: nbd.size }], createdAt: new Date().toISOString(),
      };
      const encoder = new DeltaStreamEncoder(header, { compressionLevel: level });
      const point = await receiver.sendCycle(PROTECTION, deltaStreamBody(encoder, [{ index: 0, client: nbd, ops }]));
      await nbd.close();
      return { point, wire: encoder.wireBytes, data: opBytes(ops, 'data') };
    };
    if (values.incremental && !values.sink && !(await receiver.latestPoint(PROTECTION))) await cycle('full');
    const cpu0 = process.cpuUsage();
    const run = await timed(() => cycle(values.incremental ? 'incremental' : 'full'));
    const cpu = process.cpuUsage(cpu0);
    process.stdout.write(
      `vmdr ${values.incremental ? `incremental, ${SCATTERED.length} × 64 KiB` : 'full'} (compression ${values.compression}): ${(run.ms / 1000).toFixed(2)} s, ${(GiB / MiB / (run.ms / 1000)).toFixed(0)} MiB/s of disk; ` +
        `data ${(run.value.data / MiB).toFixed(0)} MiB, wire ${(run.value.wire / MiB).toFixed(0)} MiB, ${run.value.point.id}; ` +
        `sender CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s (user ${(cpu.user / 1e6).toFixed(2)})\n`,
    );
  }
}

if (process.argv.includes('--receiver')) void receiverChild();
else runBench('bench:pipeline', main);
