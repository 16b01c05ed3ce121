/**
 * The receiver's promises, held to real parts: fastify over HTTPS on loopback with its own pinned
 * certificate, the ReceiverClient a source host uses, SQLite, qemu-nbd and qemu-img. Delta streams
 * are made here with DeltaStreamEncoder, as a source host makes them, and kept frame by frame so
 * a test can corrupt, cut, replay, reorder or splice them. Every check reads the replica's bytes
 * back and compares them with a model; a refused stream must leave nothing behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:https';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { VmdrError } from '../../../hypervisors/errors.js';
import { parseConfig } from '../../../plugin/config/load.js';
import type { Config } from '../../../plugin/config/schema.js';
import { ensureIdentity, type SiteIdentity } from '../../../plugin/sites/identity.js';
import { asThisSite } from '../../../plugin/sites/peer-connect.js';
import { startReceiver } from '../../../plugin/replication/receiver/server.js';
import { DELTA_STREAM_TYPE } from '../../../plugin/replication/stream/format.js';
import { ReplicaStore, type RecoveryPoint } from '../../../plugin/replication/replica/store.js';
import { policyOf } from '../../../plugin/replication/replica/retention.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import { Codec } from '../../../plugin/replication/stream/format.js';
import { currentLease } from '../../../plugin/state/leases.js';
import { StateStore } from '../../../plugin/state/store.js';
import { rejectsWith } from '../../helpers/assertions.js';
import {
  DiskModel,
  KiB,
  MiB,
  Prng,
  assertPointHolds,
  chainOf,
  chunks,
  encodeStream,
  eventually,
  localHashes,
  randomOps,
  receiverConfigYaml,
  resealFrame,
  streamBytes,
  streamHeader,
  strayPointFiles,
  type DiskSpec,
  type EncodedStream,
  type Op,
} from '../../helpers/receiver-lab.js';

const exec = promisify(execFile);
const WEB = 'acme-web';
const DB = 'acme-db';
/** vdb is not a multiple of 64 KiB: its last hash block and its last frames are 1.5 KiB long. */
const DISKS: DiskSpec[] = [
  { name: 'vda', sizeBytes: 8 * MiB },
  { name: 'vdb', sizeBytes: 8 * MiB + 1536 },
];

describe('replication receiver over HTTPS (in process, real qemu-nbd and SQLite)', function () {
  this.timeout(60_000);
  const seed = Number(process.env['VMDR_TEST_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const rng = new Prng(seed);
  let root: string;
  let storage: string;
  let state: StateStore;
  let replicas: ReplicaStore;
  let credentials: SiteIdentity;
  let config: Config;
  let app: FastifyInstance;
  let url: string;
  let client: ReceiverClient;
  const warnings: unknown[] = [];
  /** Point id → the bytes it must hold. */
  const models = new Map<string, DiskModel>();
  let cycle = 0;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-receiver-'));
    storage = join(root, 'replicas');
    const statePath = join(root, 'state', 'vmdr.db');
    credentials = await ensureIdentity(join(root, 'receiver'), 'dr');
    config = parseConfig(
      receiverConfigYaml({
        statePath,
        storage,
        listen: '127.0.0.1:8443',
        credentials: credentials.dir,
        protections: [{ name: WEB, keep: 1000 }, { name: DB }, { name: 'acme-far', site: 'dr2' }],
      }),
      join(root, 'vmdr.yaml'),
    );
    state = StateStore.open(statePath);
    replicas = new ReplicaStore(storage, state);
    let port: number;
    ({ app, port } = await startReceiver(
      {
        config,
        site: 'dr',
        replicas,
        credentials,
        onCommitted: async (p) => {
          await replicas.applyRetention(p.name, policyOf(p.retention));
        },
        onWarning: (err) => warnings.push(err),
      },
      { host: '127.0.0.1', port: 0 },
    ));
    url = `https://127.0.0.1:${port}`;
    client = new ReceiverClient(url, 'dr', asThisSite(credentials));
  });

  after(async () => {
    client?.close();
    await app?.close();
    state?.close();
    await rm(root, { recursive: true, force: true });
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.log(`    receiver suite seed: VMDR_TEST_SEED=${seed}`);
    assert.deepEqual(warnings, [], 'retention after a commit warned');
  });

  const latest = () => replicas.latestPoint(WEB);
  const modelOf = (p: RecoveryPoint | undefined) => (p ? models.get(p.id)! : DiskModel.empty(DISKS));

  /** Builds the next cycle of WEB on the newest point: its stream and the model it must produce. */
  function nextCycle(ops: Op[], o: { base?: string | null; protection?: string; kind?: 'full' | 'incremental'; session?: string } = {}) {
    cycle += 1;
    const newest = latest();
    const header = streamHeader({
      protection: o.protection ?? WEB,
      disks: DISKS,
      base: o.base === undefined ? (newest?.id ?? null) : o.base,
      n: cycle,
      ...(o.kind ? { kind: o.kind } : {}),
      ...(o.session ? { session: o.session } : {}),
    });
    return { stream: encodeStream(header, ops), model: modelOf(newest).after(ops) };
  }

  /** Sends a good cycle and holds the committed point to its model. */
  async function commit(ops: Op[]): Promise<RecoveryPoint> {
    const before = latest();
    const { stream, model } = nextCycle(ops);
    const point = await client.sendCycle(WEB, chunks(streamBytes(stream)));
    assert.equal(point.id, `rp-${(before?.seq ?? 0) + 1}`);
    assert.deepEqual(latest()?.id, point.id);
    models.set(point.id, model);
    await assertPointHolds(latest()!, model, DISKS);
    return point;
  }

  /** The replica is as it was: same points, no stray overlay, no lease left, older points intact. */
  async function assertNothingLeft(before: RecoveryPoint[], protection = WEB): Promise<void> {
    assert.deepEqual(replicas.listPoints(protection).map((p) => p.id), before.map((p) => p.id), `${protection}: points changed`);
    assert.deepEqual(await strayPointFiles(storage, protection, before), [], `${protection}: an overlay of a refused stream is left`);
    assert.equal(currentLease(state.db, protection), undefined, `${protection}: a lease is left`);
  }

  /** The stream is refused with `code`, leaves nothing, and the next good cycle commits. */
  async function refused(buffers: Buffer[], code: string, o: { protection?: string } = {}): Promise<VmdrError> {
    const before = replicas.listPoints(WEB);
    const err = await rejectsWith(client.sendCycle(o.protection ?? WEB, chunks(buffers)), code);
    await assertNothingLeft(before);
    if (before.length > 0) await assertPointHolds(before.at(-1)!, models.get(before.at(-1)!.id)!, DISKS);
    await commit(randomOps(rng, DISKS, 3, 128 * KiB));
    return err;
  }

  /** A raw HTTPS request, for the statuses the client turns into codes. */
  function raw(path: string, body: Buffer[], o: { as?: { cert: Buffer; key: Buffer } | null; type?: string } = {}): Promise<{ status: number; body: { error?: { code: string } }; connection: string | undefined }> {
    const as = o.as === undefined ? credentials : o.as;
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, url), {
        method: 'POST',
        ca: credentials.cert,
        agent: false,
        ...(as ? { cert: as.cert, key: as.key } : {}),
        headers: { 'content-type': o.type ?? DELTA_STREAM_TYPE },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        const got: Buffer[] = [];
        res.on('data', (c: Buffer) => got.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(got).toString('utf8') || '{}'), connection: res.headers.connection }));
      });
      for (const b of body) req.write(b);
      req.end();
    });
  }

  /** A small good stream on the newest point, to tamper with. */
  function target(): EncodedStream {
    // The compressible frame first: after an incompressible one the encoder skips zstd for a while.
    return nextCycle([
      { kind: 'data', disk: 1, offset: 3 * MiB, data: Buffer.alloc(128 * KiB, 0x5e) },
      { kind: 'data', disk: 0, offset: 64 * KiB, data: rng.bytes(96 * KiB) },
      { kind: 'zero', disk: 0, offset: 0, length: 32 * KiB },
      { kind: 'data', disk: 1, offset: 1 * MiB + 17, data: rng.bytes(5000) },
    ]).stream;
  }

  it('commits a full stream of two disks as rp-1 holding exactly the bytes sent; zero frames read as zeroes over earlier data', async () => {
    const vdbSize = DISKS[1]!.sizeBytes;
    const ops: Op[] = [
      { kind: 'data', disk: 0, offset: 5 * MiB, data: Buffer.alloc(256 * KiB, 0xcd) }, // travels as zstd (first: see target())
      { kind: 'data', disk: 0, offset: 0, data: rng.bytes(3 * MiB) },
      { kind: 'zero', disk: 0, offset: 1 * MiB, length: 512 * KiB }, // over data of this same stream
      { kind: 'data', disk: 0, offset: 7 * MiB + 123, data: rng.bytes(1000) }, // unaligned
      { kind: 'data', disk: 1, offset: 0, data: rng.bytes(vdbSize) }, // 4 MiB + 4 MiB + 1536: three frames
      { kind: 'zero', disk: 1, offset: 2 * MiB + 512, length: 64 * KiB + 7 },
      { kind: 'data', disk: 1, offset: vdbSize - 1536, data: Buffer.alloc(1536, 0xab) }, // the last bytes of the odd disk
    ];
    const { stream, model } = nextCycle(ops);
    assert.equal(stream.header.kind, 'full');
    assert.ok(stream.frames.some((f) => f.readUInt8(13) === Codec.Zstd), 'some frame is zstd');
    const point = await client.sendCycle(WEB, chunks(streamBytes(stream)));
    models.set(point.id, model);
    assert.equal(point.id, 'rp-1');
    assert.equal(point.kind, 'full');
    assert.equal(point.since, null);
    assert.equal(point.checkpoint, stream.header.checkpoint);
    assert.deepEqual(point.time, new Date(stream.header.createdAt));
    assert.equal(point.dataBytes, 3 * MiB + 256 * KiB + 1000 + vdbSize + 1536);
    assert.equal(point.zeroBytes, 512 * KiB + 64 * KiB + 7);
    assert.ok(point.bytesShipped > 0 && point.bytesShipped < point.dataBytes, `shipped ${point.bytesShipped}`);
    assert.deepEqual((await client.listPoints(WEB)).map((p) => p.id), ['rp-1']);
    await assertPointHolds(latest()!, model, DISKS);
    // The same facts as qemu-io sees them.
    const [vda, vdb] = latest()!.disks.map((d) => d.image);
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P 0 ${1 * MiB} ${512 * KiB}`, vda!]).then(({ stdout }) => assert.doesNotMatch(stdout, /verification failed/));
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P 0xcd ${5 * MiB} ${256 * KiB}`, vda!]).then(({ stdout }) => assert.doesNotMatch(stdout, /verification failed/));
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P 0xab ${vdbSize - 1536} 1536`, vdb!]).then(({ stdout }) => assert.doesNotMatch(stdout, /verification failed/));
  });

  it('commits an incremental on top as rp-2; rp-1 still reads its old bytes', async () => {
    const vdbSize = DISKS[1]!.sizeBytes;
    const rp1 = latest()!;
    const ops: Op[] = [
      { kind: 'zero', disk: 0, offset: 0, length: 64 * KiB }, // zeroes over rp-1's data
      { kind: 'zero', disk: 0, offset: 2 * MiB + 100, length: 300 * KiB }, // unaligned zeroes over data
      { kind: 'data', disk: 0, offset: 5 * MiB + 4096, data: rng.bytes(8192) },
      { kind: 'data', disk: 1, offset: vdbSize - 1536, data: Buffer.alloc(1536, 0x11) },
      { kind: 'zero', disk: 1, offset: 4 * MiB, length: 2 * MiB },
    ];
    const { stream, model } = nextCycle(ops);
    assert.equal(stream.header.kind, 'incremental');
    assert.equal(stream.header.base, 'rp-1');
    const point = await client.sendCycle(WEB, chunks(streamBytes(stream)));
    models.set(point.id, model);
    assert.equal(point.id, 'rp-2');
    assert.equal(point.kind, 'incremental');
    assert.equal(point.since, stream.header.since);
    assert.deepEqual((await client.listPoints(WEB)).map((p) => p.id), ['rp-1', 'rp-2']);
    assert.equal((await client.latestPoint(WEB))?.id, 'rp-2');
    await assertPointHolds(latest()!, model, DISKS);
    await assertPointHolds(replicas.getPoint(WEB, 'rp-1'), models.get('rp-1')!, DISKS);
    assert.equal(replicas.getPoint(WEB, 'rp-1').disks[0]!.image, rp1.disks[0]!.image);
  });

  it('makes the overlays of the next point ahead after a commit, and the next cycle writes into those very files; recover() removes such files it did not make', async () => {
    const rp2 = latest()!;
    const next = rp2.disks.map((d) => join(dirname(d.image), 'next-3.qcow2'));
    await eventually(async () => {
      for (const f of next) await stat(f);
    });
    for (const [i, f] of next.entries()) {
      const info = JSON.parse((await exec('qemu-img', ['info', '-U', '--output=json', f])).stdout) as { 'virtual-size': number; 'backing-filename': string };
      assert.equal(info['backing-filename'], basename(rp2.disks[i]!.image), `${f} is on the newest point`);
      assert.equal(info['virtual-size'], DISKS[i]!.sizeBytes);
    }
    const inodes = await Promise.all(next.map(async (f) => (await stat(f)).ino));
    const rp3 = await commit(randomOps(rng, DISKS, 4, 256 * KiB));
    assert.deepEqual(await Promise.all(rp3.disks.map(async (d) => (await stat(d.image)).ino)), inodes, 'rp-3 is written into the overlays made ahead');
    for (const f of next) await assert.rejects(stat(f), { code: 'ENOENT' });
    await assertPointHolds(rp2, models.get(rp2.id)!, DISKS);
    // What a killed receiver made ahead is debris to the next one; what this one made stays.
    const ours = rp3.disks.map((d) => join(dirname(d.image), 'next-4.qcow2'));
    await eventually(async () => {
      for (const f of ours) await stat(f);
    });
    const debris = join(dirname(rp3.disks[0]!.image), 'next-9.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', debris, '1M']);
    assert.deepEqual((await replicas.recover(WEB)).discarded, [debris]);
    for (const f of ours) await stat(f);
  });

  it('refuses a flipped byte in a frame payload (STREAM_CHECKSUM_MISMATCH)', async () => {
    const s = target();
    const frame = Buffer.from(s.frames[1]!);
    const at = 40 + Math.floor(frame.readUInt32BE(28) / 2);
    frame[at] = frame[at]! ^ 0x01;
    await refused(streamBytes({ start: s.start, frames: [s.frames[0]!, frame, ...s.frames.slice(2)] }), 'STREAM_CHECKSUM_MISMATCH');
  });

  it('refuses a flipped byte in a frame header (STREAM_CHECKSUM_MISMATCH)', async () => {
    const s = target();
    const frame = Buffer.from(s.frames[2]!);
    frame[19] = frame[19]! ^ 0x40; // the offset
    await refused(streamBytes({ start: s.start, frames: [s.frames[0]!, s.frames[1]!, frame, ...s.frames.slice(3)] }), 'STREAM_CHECKSUM_MISMATCH');
  });

  it('refuses a body that ends in the middle of a frame (STREAM_TRUNCATED)', async () => {
    const s = target();
    const cut = s.frames[1]!.subarray(0, 40 + 1000);
    await refused([s.start, s.frames[0]!, cut], 'STREAM_TRUNCATED');
  });

  it('refuses a body that ends after whole frames but before the end frame (STREAM_TRUNCATED)', async () => {
    const s = target();
    await refused([s.start, ...s.frames.slice(0, -1)], 'STREAM_TRUNCATED');
  });

  it('commits nothing when the connection drops in the middle of a frame', async () => {
    const before = replicas.listPoints(WEB);
    const s = target();
    async function* dropping() {
      yield s.start;
      yield s.frames[0]!;
      yield s.frames[1]!.subarray(0, 40 + 2000);
      // Let the receiver take those bytes (and open its overlays) before the sender dies.
      await new Promise((r) => setTimeout(r, 300));
      throw new Error('test: sender lost its connection');
    }
    await assert.rejects(client.sendCycle(WEB, dropping()));
    // The receiver learns of the cut asynchronously: wait for it to discard, then check nothing stayed.
    await eventually(() => assertNothingLeft(before));
    await commit(randomOps(rng, DISKS, 3, 128 * KiB));
  });

  it('refuses a replayed frame (STREAM_OUT_OF_ORDER)', async () => {
    const s = target();
    await refused(streamBytes({ start: s.start, frames: [s.frames[0]!, s.frames[1]!, s.frames[1]!, ...s.frames.slice(2)] }), 'STREAM_OUT_OF_ORDER');
  });

  it('refuses two frames swapped (STREAM_OUT_OF_ORDER)', async () => {
    const s = target();
    await refused(streamBytes({ start: s.start, frames: [s.frames[1]!, s.frames[0]!, ...s.frames.slice(2)] }), 'STREAM_OUT_OF_ORDER');
  });

  it('refuses a dropped frame (STREAM_OUT_OF_ORDER)', async () => {
    const s = target();
    await refused(streamBytes({ start: s.start, frames: [s.frames[0]!, ...s.frames.slice(2)] }), 'STREAM_OUT_OF_ORDER');
  });

  it('refuses a frame of another session spliced in at its own sequence number (STREAM_CHECKSUM_MISMATCH)', async () => {
    const newest = latest()!;
    const ops: Op[] = [
      { kind: 'data', disk: 0, offset: 0, data: Buffer.alloc(64 * KiB, 0x21) },
      { kind: 'data', disk: 1, offset: 0, data: Buffer.alloc(64 * KiB, 0x22) },
      { kind: 'zero', disk: 1, offset: 64 * KiB, length: 64 * KiB },
    ];
    const mine = encodeStream(streamHeader({ protection: WEB, disks: DISKS, base: newest.id, n: 900, session: 'session-a' }), ops);
    const other = encodeStream(streamHeader({ protection: WEB, disks: DISKS, base: newest.id, n: 900, session: 'session-b' }), [
      ops[0]!,
      { kind: 'data', disk: 1, offset: 0, data: Buffer.alloc(64 * KiB, 0x66) },
      ops[2]!,
    ]);
    await refused(streamBytes({ start: mine.start, frames: [mine.frames[0]!, other.frames[1]!, ...mine.frames.slice(2)] }), 'STREAM_CHECKSUM_MISMATCH');
  });

  it('refuses a zstd frame whose announced size is not its length (STREAM_BAD_FRAME)', async () => {
    const s = target();
    const i = s.frames.findIndex((f) => f.readUInt8(13) === Codec.Zstd);
    assert.ok(i >= 0, 'the target stream has a zstd frame');
    const lying = resealFrame(s.frames[i]!, chainOf(s), (h) => h.writeUInt32BE(h.readUInt32BE(24) + 4096, 24));
    const err = await refused(streamBytes({ start: s.start, frames: [...s.frames.slice(0, i), lying, ...s.frames.slice(i + 1)] }), 'STREAM_BAD_FRAME');
    assert.match(err.message, /decompressed size/);
  });

  it('refuses a zstd payload that does not decompress to what it announces (STREAM_BAD_FRAME)', async () => {
    const s = target();
    const i = s.frames.findIndex((f) => f.readUInt8(13) === Codec.Zstd);
    // Truncate the compressed payload: the zstd frame header still announces the right size.
    const f = s.frames[i]!;
    const short = resealFrame(Buffer.concat([f.subarray(0, 40), f.subarray(40, f.length - 8)]), chainOf(s), (h) => h.writeUInt32BE(f.length - 48, 28));
    await refused(streamBytes({ start: s.start, frames: [...s.frames.slice(0, i), short, ...s.frames.slice(i + 1)] }), 'STREAM_BAD_FRAME');
  });

  it('refuses a data frame past the end of a disk (STREAM_BAD_FRAME)', async () => {
    const vdbSize = DISKS[1]!.sizeBytes;
    const { stream } = nextCycle([
      { kind: 'data', disk: 0, offset: 0, data: rng.bytes(4096) },
      { kind: 'data', disk: 1, offset: vdbSize - 1024, data: rng.bytes(4096) },
    ]);
    const err = await refused(streamBytes(stream), 'STREAM_BAD_FRAME');
    assert.match(err.message, /past the end of disk vdb/);
  });

  it('refuses a zero frame past the end of a disk and a frame naming a disk the stream lacks (STREAM_BAD_FRAME)', async () => {
    const { stream } = nextCycle([{ kind: 'zero', disk: 0, offset: 8 * MiB - 512, length: 1024 }]);
    await refused(streamBytes(stream), 'STREAM_BAD_FRAME');
    const s = target();
    const foreign = resealFrame(s.frames[1]!, chainOf(s), (h) => h.writeUInt16BE(2, 14));
    await refused(streamBytes({ start: s.start, frames: [s.frames[0]!, foreign, ...s.frames.slice(2)] }), 'STREAM_BAD_FRAME');
  });

  it('refuses data after the end frame and an end frame whose counts lie (STREAM_BAD_FRAME)', async () => {
    const s = target();
    await refused([...streamBytes(s), Buffer.from('x')], 'STREAM_BAD_FRAME');
    const t = target();
    const endAt = t.frames.length - 1;
    const end = t.frames[endAt]!;
    const trailer = JSON.parse(end.subarray(40).toString('utf8')) as { frames: number; dataBytes: number; zeroBytes: number };
    const payload = Buffer.from(JSON.stringify({ ...trailer, dataBytes: trailer.dataBytes - 1 }));
    const { crc32 } = await import('node:zlib');
    const lying = resealFrame(Buffer.concat([end.subarray(0, 40), payload]), chainOf(t), (h) => {
      h.writeUInt32BE(payload.length, 24);
      h.writeUInt32BE(payload.length, 28);
      h.writeUInt32BE(crc32(payload), 32);
    });
    await refused(streamBytes({ start: t.start, frames: [...t.frames.slice(0, endAt), lying] }), 'STREAM_BAD_FRAME');
  });

  it('refuses a stream on the wrong base (STREAM_BASE_MISMATCH, HTTP 409) before writing anything', async () => {
    const newest = latest()!;
    assert.ok(newest.seq >= 3);
    const older = `rp-${newest.seq - 1}`;
    const ops = randomOps(rng, DISKS, 2, 64 * KiB);
    const err = await refused(streamBytes(nextCycle(ops, { base: older }).stream), 'STREAM_BASE_MISMATCH');
    assert.match(err.message, new RegExp(`newest recovery point of "${WEB}" is rp-`));
    // A full stream for an empty replica, sent to one that has points, is no less wrong.
    await refused(streamBytes(nextCycle(ops, { base: null }).stream), 'STREAM_BASE_MISMATCH');
    await refused(streamBytes(nextCycle(ops, { base: `rp-${newest.seq + 50}` }).stream), 'STREAM_BASE_MISMATCH');
    const before = replicas.listPoints(WEB);
    const answer = await raw(`/v1/protections/${WEB}/cycles`, streamBytes(nextCycle(ops, { base: older }).stream));
    assert.equal(answer.status, 409);
    assert.equal(answer.body.error?.code, 'STREAM_BASE_MISMATCH');
    await assertNothingLeft(before);
  });

  it('refuses a stream that names another protection than the URL (STREAM_BAD_HEADER, 400); neither replica changes', async () => {
    const dbBefore = replicas.listPoints(DB);
    const { stream } = nextCycle(randomOps(rng, DISKS, 2, 64 * KiB), { protection: DB, base: null });
    await refused(streamBytes(stream), 'STREAM_BAD_HEADER');
    await assertNothingLeft(dbBefore, DB);
    // And the other way round: a stream for WEB posted to DB.
    const before = replicas.listPoints(WEB);
    const answer = await raw(`/v1/protections/${DB}/cycles`, streamBytes(nextCycle([], {}).stream));
    assert.equal(answer.status, 400);
    assert.equal(answer.body.error?.code, 'STREAM_BAD_HEADER');
    await assertNothingLeft(before);
    await assertNothingLeft(dbBefore, DB);
  });

  it('refuses an unknown protection and one whose target is another site (PROTECTION_UNKNOWN, 404)', async () => {
    const before = replicas.listPoints(WEB);
    const { stream } = nextCycle([]);
    await rejectsWith(client.sendCycle('no-such-protection', chunks(streamBytes(stream))), 'PROTECTION_UNKNOWN');
    await rejectsWith(client.sendCycle('acme-far', chunks(streamBytes(stream))), 'PROTECTION_UNKNOWN');
    await rejectsWith(client.latestPoint('acme-far'), 'PROTECTION_UNKNOWN');
    await rejectsWith(client.hashes('no-such-protection', 'rp-1', 'vda', 64 * KiB), 'PROTECTION_UNKNOWN');
    for (const p of ['no-such-protection', 'acme-far']) {
      const answer = await raw(`/v1/protections/${p}/cycles`, streamBytes(stream));
      assert.equal(answer.status, 404);
      assert.equal(answer.body.error?.code, 'PROTECTION_UNKNOWN');
    }
    await assertNothingLeft(before);
    assert.deepEqual(await strayPointFiles(storage, 'no-such-protection', []), []);
  });

  it('refuses a client with an unpinned certificate or none (PEER_UNKNOWN, 401) before reading anything', async () => {
    const before = replicas.listPoints(WEB);
    const { stream, model } = nextCycle(randomOps(rng, DISKS, 2, 64 * KiB));
    const stranger = await ensureIdentity(join(root, 'stranger'), 'stranger');
    const wrong = new ReceiverClient(url, 'dr', { cert: stranger.cert, key: stranger.key, pinned: credentials.cert });
    try {
      await rejectsWith(wrong.sendCycle(WEB, chunks(streamBytes(stream))), 'PEER_UNKNOWN');
      await rejectsWith(wrong.latestPoint(WEB), 'PEER_UNKNOWN');
      await rejectsWith(wrong.hashes(WEB, before.at(-1)!.id, 'vda', 64 * KiB), 'PEER_UNKNOWN');
    } finally {
      wrong.close();
    }
    for (const as of [stranger, null]) {
      const answer = await raw(`/v1/protections/${WEB}/cycles`, streamBytes(stream), { as });
      assert.equal(answer.status, 401);
      assert.equal(answer.body.error?.code, 'PEER_UNKNOWN');
      assert.equal(answer.connection, 'close');
    }
    await assertNothingLeft(before);
    // The very same stream from this site's own certificate applies.
    const point = await client.sendCycle(WEB, chunks(streamBytes(stream)));
    assert.equal(point.id, `rp-${before.at(-1)!.seq + 1}`);
    models.set(point.id, model);
    await assertPointHolds(latest()!, model, DISKS);
  });

  it('refuses a receiver that does not present the pinned certificate (PEER_UNTRUSTED)', async () => {
    const before = replicas.listPoints(WEB);
    const other = await ensureIdentity(join(root, 'other-receiver'), 'dr');
    const untrusting = new ReceiverClient(url, 'dr', { cert: credentials.cert, key: credentials.key, pinned: other.cert });
    try {
      const { stream } = nextCycle(randomOps(rng, DISKS, 2, 64 * KiB));
      await rejectsWith(untrusting.sendCycle(WEB, chunks(streamBytes(stream))), 'PEER_UNTRUSTED');
      await rejectsWith(untrusting.latestPoint(WEB), 'PEER_UNTRUSTED');
    } finally {
      untrusting.close();
    }
    await assertNothingLeft(before);
  });

  it('two concurrent cycles of one protection take turns: the second waits for the first, then is refused on its stale base', async () => {
    const before = latest()!;
    const first = nextCycle(randomOps(rng, DISKS, 4, 256 * KiB));
    const second = nextCycle(randomOps(rng, DISKS, 4, 256 * KiB));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* slow() {
      yield first.stream.start;
      for (const f of first.stream.frames.slice(0, -1)) yield f;
      await gate;
      yield first.stream.frames.at(-1)!;
    }
    const firstDone = client.sendCycle(WEB, slow());
    // The first cycle holds the replica once its overlays exist.
    await eventually(async () => assert.ok(currentLease(state.db, WEB), 'first cycle holds the replica'));
    let secondSettled = false;
    const secondDone = client.sendCycle(WEB, chunks(streamBytes(second.stream))).finally(() => (secondSettled = true));
    secondDone.catch(() => undefined);
    // While the first is open the second is queued behind it, neither refused nor applied.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(secondSettled, false, 'the second cycle waits its turn');
    assert.equal(latest()!.id, before.id, 'nothing committed yet');
    release();
    const point = await firstDone;
    assert.equal(point.id, `rp-${before.seq + 1}`);
    models.set(point.id, first.model);
    await rejectsWith(secondDone, 'STREAM_BASE_MISMATCH');
    assert.equal(latest()!.id, point.id);
    await assertPointHolds(latest()!, first.model, DISKS);
    await assertPointHolds(before, models.get(before.id)!, DISKS);
    assert.deepEqual(await strayPointFiles(storage, WEB, replicas.listPoints(WEB)), []);
    assert.equal(currentLease(state.db, WEB), undefined);
    // The loser resends on the new base and commits.
    await commit(randomOps(rng, DISKS, 3, 128 * KiB));
  });

  it('two concurrent cycles on the same base, unsynchronised: exactly one commits, the other is refused, the replica holds the winner', async () => {
    for (let round = 0; round < 4; round++) {
      const before = latest()!;
      const a = nextCycle(randomOps(rng, DISKS, 3, 128 * KiB));
      const b = nextCycle(randomOps(rng, DISKS, 3, 128 * KiB));
      const results = await Promise.allSettled([a, b].map((c) => client.sendCycle(WEB, chunks(streamBytes(c.stream)))));
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ point: r.value, model: [a, b][i]!.model }] : []));
      const lost = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as VmdrError] : []));
      assert.equal(won.length, 1, `round ${round}: exactly one commits; ${lost.map((e) => e.code).join(', ')}`);
      assert.equal(lost.length, 1);
      assert.equal(lost[0]!.code, 'STREAM_BASE_MISMATCH', lost[0]!.message);
      assert.equal(won[0]!.point.id, `rp-${before.seq + 1}`);
      models.set(won[0]!.point.id, won[0]!.model);
      assert.equal(latest()!.id, won[0]!.point.id);
      await assertPointHolds(latest()!, won[0]!.model, DISKS);
      assert.deepEqual(await strayPointFiles(storage, WEB, replicas.listPoints(WEB)), []);
      assert.equal(currentLease(state.db, WEB), undefined);
    }
  });

  it('answers /hashes with the sha256 of every 64 KiB block of a point, as computed from the model', async () => {
    for (const point of replicas.listPoints(WEB).filter((p) => p.seq === 1 || p.seq === 2 || p === latest())) {
      const model = models.get(point.id)!;
      for (const [i, d] of DISKS.entries()) {
        const got = await client.hashes(WEB, point.id, d.name, 64 * KiB);
        const want = localHashes(model.disks[i]!);
        assert.equal(got.length, Math.ceil(d.sizeBytes / (64 * KiB)) * 32, `${point.id}/${d.name} hash count`);
        for (let b = 0; b < want.length / 32; b++) {
          assert.ok(got.subarray(b * 32, b * 32 + 32).equals(want.subarray(b * 32, b * 32 + 32)), `${point.id}/${d.name} block ${b} hash differs`);
        }
      }
    }
    // Another block size, the odd disk: the last block is the short one.
    const newest = latest()!;
    const got = await client.hashes(WEB, newest.id, 'vdb', 1 * MiB);
    assert.ok(got.equals(localHashes(models.get(newest.id)!.disks[1]!, 1 * MiB)));
    assert.equal((await client.hashes(WEB, newest.id, 'vdz', 64 * KiB)).length, 0, 'a disk the point lacks hashes to nothing');
    await rejectsWith(client.hashes(WEB, 'rp-999', 'vda', 64 * KiB), 'RECOVERY_POINT_NOT_FOUND');
  });

  it('after all of it: every listed point still reads its own bytes and no stray overlay exists', async () => {
    const points = replicas.listPoints(WEB);
    assert.equal(points[0]!.id, 'rp-1');
    for (const p of points) await assertPointHolds(p, models.get(p.id)!, DISKS, `${p.id}: `);
    assert.deepEqual(await strayPointFiles(storage, WEB, points), []);
    assert.deepEqual(replicas.listPoints(DB), []);
  });
});
