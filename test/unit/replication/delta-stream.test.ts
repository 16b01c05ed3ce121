import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { crc32Combine } from '../../../plugin/replication/stream/crc.js';
import { DeltaStreamEncoder } from '../../../plugin/replication/stream/encode.js';
import { packWorkersReady } from '../../../plugin/replication/stream/pack-pool.js';
import { decodeDeltaStream } from '../../../plugin/replication/stream/decode.js';
import { compress } from 'zstd-napi';
import { Codec, FrameKind, MAX_FRAME_DATA, type Frame, type StreamHeader } from '../../../plugin/replication/stream/format.js';
import { StreamError } from '../../../plugin/replication/stream/errors.js';
import { Prng } from '../../helpers/receiver-lab.js';
import { forgeStream, lyingZstd, sealFrame, skippableFrame, withoutContentSize } from '../../helpers/stream-forge.js';

const MiB = 1024 * 1024;

function header(session = 's1'): StreamHeader {
  return {
    session,
    protection: 'web',
    checkpoint: 'vmdr-2',
    since: 'vmdr-1',
    base: 'rp-1',
    kind: 'incremental',
    disks: [
      { name: 'vda', sizeBytes: 64 * MiB },
      { name: 'vdb', sizeBytes: 8 * MiB + 513 },
    ],
    createdAt: '2026-11-24T00:00:00.000Z',
  };
}

/** A stream as a list of frames, each frame a list of buffers, so tests can cut and splice it. */
function encode(session = 's1', random: Buffer = randomBytes(6 * MiB)) {
  const encoder = new DeltaStreamEncoder(header(session));
  const start = encoder.start();
  const frames: Buffer[][] = [];
  const push = (buffers: Buffer[]) => {
    for (let i = 0; i < buffers.length; i += 2) frames.push(buffers.slice(i, i + 2));
  };
  push(encoder.data(0, 0, random)); // splits into two frames
  push(encoder.data(0, 32 * MiB, Buffer.alloc(64 * 1024, 0xcd))); // compresses
  push(encoder.zero(0, 40 * MiB, 10 * MiB));
  push(encoder.data(1, 8 * MiB, Buffer.alloc(513, 0xab))); // the last bytes of an odd-sized disk
  push(encoder.end());
  return { start, frames, random, wireBytes: encoder.wireBytes };
}

async function decodeAll(chunks: Buffer[]): Promise<{ header: StreamHeader; frames: Frame[] }> {
  async function* source() {
    for (const c of chunks) yield c;
  }
  const { header: h, frames } = await decodeDeltaStream(source());
  const out: Frame[] = [];
  for await (const f of frames) out.push(f);
  return { header: h, frames: out };
}

async function refused(chunks: Buffer[], code: string | RegExp): Promise<StreamError> {
  let caught: unknown;
  const seen: Frame[] = [];
  try {
    async function* source() {
      for (const c of chunks) yield c;
    }
    const { frames } = await decodeDeltaStream(source());
    for await (const f of frames) seen.push(f);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof StreamError, `expected a StreamError, got ${String(caught)}`);
  if (typeof code === 'string') assert.equal(caught.code, code, caught.message);
  else assert.match(caught.code, code);
  assert.ok(!seen.some((f) => f.kind === FrameKind.End), 'a refused stream must never yield its end frame');
  return caught;
}

describe('delta stream', () => {
  it('carries data, zero runs and the last bytes of an odd-sized disk intact', async () => {
    const { start, frames, random } = encode();
    const { header: h, frames: got } = await decodeAll([start, ...frames.flat()]);
    assert.equal(h.checkpoint, 'vmdr-2');
    assert.deepEqual(
      got.map((f) => f.kind),
      [FrameKind.Data, FrameKind.Data, FrameKind.Data, FrameKind.Zero, FrameKind.Data, FrameKind.End],
    );
    const data = got.filter((f) => f.kind === FrameKind.Data);
    assert.ok(Buffer.concat([data[0]!.data, data[1]!.data]).equals(random));
    assert.equal(data[0]!.data.length, MAX_FRAME_DATA);
    assert.ok(data[2]!.data.equals(Buffer.alloc(64 * 1024, 0xcd)));
    assert.deepEqual({ ...got[3] }, { kind: FrameKind.Zero, seq: 3, disk: 0, offset: 40 * MiB, length: 10 * MiB });
    assert.equal(data[3]!.disk, 1);
    assert.equal(data[3]!.offset + data[3]!.data.length, 8 * MiB + 513);
  });

  it('compresses what compresses and sends random data as is', () => {
    const { wireBytes } = encode();
    // 6 MiB random + (64 KiB of one byte -> a few bytes) + 513 bytes of one byte + headers.
    assert.ok(wireBytes < 6 * MiB + 2048, `wire bytes ${wireBytes}`);
    assert.ok(wireBytes > 6 * MiB, `wire bytes ${wireBytes}`);
  });

  it('survives being delivered one byte at a time', async () => {
    const { start, frames } = encode('s1', randomBytes(200));
    const all = Buffer.concat([start, ...frames.flat()]);
    const bytes = [...all].map((b) => Buffer.from([b]));
    const { frames: got } = await decodeAll(bytes);
    assert.equal(got.at(-1)!.kind, FrameKind.End);
  });

  // A fixed seed: a place that slips through fails every run, and the message names it.
  it('refuses every single flipped bit at 300 places', async () => {
    const rng = new Prng(0xb17f11b);
    const { start, frames } = encode('s1', rng.bytes(300_000));
    const all = Buffer.concat([start, ...frames.flat()]);
    for (let i = 0; i < 300; i++) {
      const copy = Buffer.from(all);
      const at = rng.int(0, copy.length - 1);
      const bit = rng.int(0, 7);
      copy[at]! ^= 1 << bit;
      await refused([copy], /^STREAM_/).catch((err: unknown) => {
        throw new Error(`bit ${bit} of byte ${at} flipped: ${(err as Error).message}`);
      });
    }
  });

  it('refuses a stream cut at 200 places, saying it was truncated', async () => {
    const rng = new Prng(0xc07);
    const { start, frames } = encode('s1', rng.bytes(300_000));
    const all = Buffer.concat([start, ...frames.flat()]);
    for (let i = 0; i < 200; i++) {
      const cut = rng.int(1, all.length - 1);
      await refused([all.subarray(0, cut)], 'STREAM_TRUNCATED').catch((err: unknown) => {
        throw new Error(`cut after ${cut} bytes: ${(err as Error).message}`);
      });
    }
  });

  it('refuses a replayed frame and reordered frames', async () => {
    const { start, frames } = encode();
    const replayed = [start, ...frames[0]!, ...frames[0]!, ...frames.slice(1).flat()];
    const err = await refused(replayed, 'STREAM_OUT_OF_ORDER');
    assert.match(err.message, /expected frame 1, got frame 0/);
    const swapped = [start, ...frames[1]!, ...frames[0]!, ...frames.slice(2).flat()];
    await refused(swapped, 'STREAM_OUT_OF_ORDER');
  });

  it('refuses a frame taken from another stream even when its sequence number fits', async () => {
    const mine = encode('session-a');
    const theirs = encode('session-b');
    const spliced = [mine.start, ...mine.frames[0]!, ...theirs.frames[1]!, ...mine.frames.slice(2).flat()];
    await refused(spliced, 'STREAM_CHECKSUM_MISMATCH');
  });

  it('refuses a dropped frame through the end frame count', async () => {
    const { start, frames } = encode();
    // Dropping the last data frame keeps every sequence number before the end in order, but the
    // end frame's own number and its trailer no longer match.
    await refused([start, ...frames.slice(0, 4).flat(), ...frames[5]!], 'STREAM_OUT_OF_ORDER');
  });

  it('refuses data after the end frame, a foreign magic and an unknown version', async () => {
    const { start, frames } = encode();
    await refused([start, ...frames.flat(), Buffer.from('x')], 'STREAM_BAD_FRAME');
    await refused([Buffer.from('GET / HTTP/1.1\r\n\r\n')], 'STREAM_BAD_MAGIC');
    const v2 = Buffer.from(start);
    v2.writeUInt16BE(2, 8);
    await refused([v2, ...frames.flat()], 'STREAM_VERSION_UNSUPPORTED');
  });

  it('refuses a header whose disk name could leave its directory, repeats, or whose date is not one, in one line naming the field', async () => {
    const bad: [Partial<StreamHeader>, RegExp][] = [
      [{ disks: [{ name: '../../etc', sizeBytes: 1024 }] }, /^delta stream refused: stream header is not valid: disks\.0\.name: a disk name of /],
      [{ disks: [{ name: 'vda', sizeBytes: 1024 }, { name: 'vda', sizeBytes: 1024 }] }, /disks: disk names must be distinct/],
      [{ createdAt: 'yesterday' }, /createdAt: /],
      [{ disks: [{ name: 'vda', sizeBytes: 2 ** 53 }] }, /disks\.0\.sizeBytes: /],
    ];
    for (const [edit, message] of bad) {
      const encoder = new DeltaStreamEncoder({ ...header(), ...edit });
      const err = await refused([encoder.start(), ...encoder.end()], 'STREAM_BAD_HEADER');
      assert.match(err.message, message);
      assert.doesNotMatch(err.message, /\n/);
    }
  });

  it('refuses zero and end frames carrying fields they do not have, even correctly sealed', async () => {
    const zero = await refused(forgeStream(header('z'), [{ kind: FrameKind.Zero, codec: Codec.Zstd, length: 4096 }]), 'STREAM_BAD_FRAME');
    assert.match(zero.message, /zero frame 0 has a codec or data checksum/);
    const start = new DeltaStreamEncoder(header('e')).start();
    const trailer = Buffer.from(JSON.stringify({ frames: 1, dataBytes: 0, zeroBytes: 0 }));
    const end = sealFrame(start.readUInt32BE(start.length - 4), 0, { kind: FrameKind.End, disk: 1, length: trailer.length, payload: trailer, data: trailer });
    assert.match((await refused([start, end], 'STREAM_BAD_FRAME')).message, /end frame has fields an end frame does not carry/);
  });

  it('refuses a frame that writes past the end of its disk', async () => {
    const encoder = new DeltaStreamEncoder(header());
    const start = encoder.start();
    const past = encoder.data(1, 8 * MiB + 1, Buffer.alloc(513));
    const err = await refused([start, ...past, ...encoder.end()], 'STREAM_BAD_FRAME');
    assert.match(err.message, /past the end of disk vdb/);
  });
});

describe('delta stream: large frames in reused buffers', () => {
  /** Six 4 MiB frames, random and compressible alternately, delivered in TLS-record-sized chunks. */
  function largeFrames() {
    const datas = Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? randomBytes(4 * MiB) : Buffer.alloc(4 * MiB, i)));
    const encoder = new DeltaStreamEncoder(header());
    const parts = [encoder.start(), ...datas.flatMap((d, i) => encoder.data(0, i * 4 * MiB, d)), ...encoder.end()];
    const whole = Buffer.concat(parts);
    async function* body() {
      for (let at = 0; at < whole.length; at += 16 * 1024) yield whole.subarray(at, at + 16 * 1024);
    }
    return { datas, body };
  }

  it('never hands out the bytes of a frame that was not released, and reads right when each is released at once', async () => {
    for (const releasing of [false, true]) {
      const { datas, body } = largeFrames();
      const kept: Frame[] = [];
      for await (const f of (await decodeDeltaStream(body())).frames) {
        if (f.kind !== FrameKind.Data) continue;
        assert.ok(f.release, 'a 4 MiB frame comes in a reusable buffer');
        if (releasing) {
          assert.ok(f.data.equals(datas[f.offset / (4 * MiB)]!), `frame at ${f.offset} read right`);
          f.release();
          f.release(); // twice is once
        } else kept.push(f);
      }
      // Frames still held read their own bytes after every later frame was decoded.
      for (const f of kept) assert.ok(f.kind === FrameKind.Data && f.data.equals(datas[f.offset / (4 * MiB)]!), `frame at ${f.kind === FrameKind.Data ? f.offset : '?'} kept its bytes`);
    }
  });
});

describe('delta stream compression', () => {
  const KiB = 1024;
  const text = (bytes: number) => Buffer.from('GET /api/v1/orders?id=42 200 0.013s host=web-3\n'.repeat(Math.ceil(bytes / 48)).slice(0, bytes));
  const codecsOf = (buffers: Buffer[]) => buffers.filter((_, i) => i % 2 === 0).map((h) => h.readUInt8(13));

  it('judges each frame by itself: random data raw, what compresses in zstd, right after random data', async () => {
    const encoder = new DeltaStreamEncoder(header('adaptive'));
    const chunks: Buffer[] = [encoder.start()];
    const frames = [
      randomBytes(MiB), // probed: its samples do not compress, so zstd never sees the whole
      randomBytes(64 * KiB), // too small to probe: tried, does not pay
      text(MiB),
      Buffer.concat([randomBytes(768 * KiB), text(256 * KiB)]), // one sample of four compresses: tried, pays
      Buffer.alloc(MiB, 0x41),
    ];
    let at = 0;
    const codecs: number[] = [];
    for (const f of frames) {
      const out = encoder.data(0, at, f);
      codecs.push(...codecsOf(out));
      chunks.push(...out);
      at += f.length;
    }
    chunks.push(...encoder.end());
    assert.deepEqual(codecs, [Codec.Raw, Codec.Raw, Codec.Zstd, Codec.Zstd, Codec.Zstd]);
    const got = (await decodeAll(chunks)).frames.filter((f) => f.kind === FrameKind.Data) as { data: Buffer }[];
    assert.deepEqual(got.map((f) => f.data), frames);
  });

  it('makes the same bytes whether frames are packed in its thread or on worker threads, several at once', async () => {
    assert.equal(await packWorkersReady(), true, 'the pack workers did not start');
    const frames = [text(3 * MiB), randomBytes(5 * MiB), Buffer.alloc(200, 0x5a), Buffer.concat([text(MiB), randomBytes(MiB)])];
    const inThread = new DeltaStreamEncoder(header('same'));
    const expected = [inThread.start()];
    let at = 0;
    for (const f of frames) {
      expected.push(...inThread.data(0, at, f));
      at += f.length;
    }
    expected.push(...inThread.end());

    const offThread = new DeltaStreamEncoder(header('same'));
    const got = [offThread.start()];
    // Each pack takes its buffer over: hand it copies, and keep the originals to compare.
    const packed = await Promise.all(frames.map((f) => offThread.pack(Buffer.from(f))));
    at = 0;
    for (const [i, p] of packed.entries()) {
      got.push(...offThread.packedData(0, at, p));
      at += frames[i]!.length;
    }
    got.push(...offThread.end());
    assert.ok(Buffer.concat(got).equals(Buffer.concat(expected)), 'the two streams differ');
    assert.equal(offThread.wireBytes, inThread.wireBytes);
    const decoded = (await decodeAll(got)).frames.filter((f) => f.kind === FrameKind.Data) as { data: Buffer }[];
    assert.ok(Buffer.concat(decoded.map((f) => f.data)).equals(Buffer.concat(frames)));
  });

  it('lets a process exit by itself with its pack workers started, used or not (a `vmdr sync` must end)', async () => {
    const pool = new URL('../../../plugin/replication/stream/pack-pool.ts', import.meta.url).href;
    const encoder = new URL('../../../plugin/replication/stream/encode.ts', import.meta.url).href;
    for (const [script, says] of [
      [`import(${JSON.stringify(pool)}).then((m) => { m.startPackWorkers(); process.stdout.write('started'); })`, 'started'],
      [`import(${JSON.stringify(pool)}).then(async (m) => { await m.packWorkersReady(); const { DeltaStreamEncoder } = await import(${JSON.stringify(encoder)}); const [p] = await new DeltaStreamEncoder(${JSON.stringify(header('exit'))}).pack(Buffer.alloc(1 << 20, 1)); process.stdout.write(\`packed \${p.payload.length}\`); })`, 'packed '],
    ]) {
      const started = Date.now();
      const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '-e', script!], { stdio: ['ignore', 'pipe', 'inherit'], timeout: 20_000 });
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.once('exit', (c) => resolve({ code: c, out }));
      });
      assert.equal(code, 0, `the process did not end by itself (${Date.now() - started} ms): ${script}`);
      assert.ok(out.startsWith(says!), `it ended before its work was done: ${JSON.stringify(out)}`);
    }
  });

  it('moves a buffer that owns its memory to a worker, and copies one that shares it (the pool of small Buffers)', async () => {
    assert.equal(await packWorkersReady(), true, 'the pack workers did not start');
    const encoder = new DeltaStreamEncoder(header('moves'));
    encoder.start();
    const own = Buffer.from(text(MiB));
    const [packedOwn] = await encoder.pack(own);
    assert.equal(own.length, 0, 'a buffer that owns its memory is moved, not copied');
    assert.equal(packedOwn!.codec, Codec.Zstd);

    const small = Buffer.from('small data frame');
    const neighbour = Buffer.from('shares the pool');
    const [packedSmall] = await encoder.pack(small);
    assert.equal(small.toString(), 'small data frame', 'a pooled buffer is copied, and stays usable');
    assert.equal(neighbour.toString(), 'shares the pool');
    assert.ok(packedSmall!.payload.equals(small));
  });
});

/**
 * What a call did to the process's memory: growth of the resident set, of Buffer memory, and of
 * the peak resident set (the kernel's high-water mark, which catches a buffer allocated and
 * dropped before the call returned).
 */
async function memoryOf<T>(run: () => Promise<T>): Promise<{ result: T; grewBy: number }> {
  const before = process.memoryUsage();
  const peakBefore = process.resourceUsage().maxRSS * 1024;
  const result = await run();
  const after = process.memoryUsage();
  const peakAfter = process.resourceUsage().maxRSS * 1024;
  return { result, grewBy: Math.max(after.rss - before.rss, after.arrayBuffers - before.arrayBuffers, peakAfter - peakBefore) };
}

describe('delta stream: decoding is bounded whatever a zstd payload announces', () => {
  const zeros = Buffer.alloc(MAX_FRAME_DATA);
  const zerosZstd = compress(zeros, { compressionLevel: 1 });
  /** One data frame of `length` bytes at offset 0 of vda, its payload `payload` as zstd. */
  const zstdFrame = (payload: Buffer, length = MAX_FRAME_DATA, data: Buffer = zeros.subarray(0, length)) => ({
    kind: FrameKind.Data,
    codec: Codec.Zstd,
    length,
    payload,
    data,
  });

  /** Refused as STREAM_BAD_FRAME naming frame 0, and the process grew by less than 64 MiB doing it. */
  async function refusedBounded(payload: Buffer, length?: number, data?: Buffer): Promise<StreamError> {
    const { result: err, grewBy } = await memoryOf(() => refused(forgeStream(header('bomb'), [zstdFrame(payload, length, data)]), 'STREAM_BAD_FRAME'));
    assert.match(err.message, /frame 0 /);
    assert.deepEqual(err.subject, { seq: 0, offset: 0 });
    assert.ok(grewBy < 64 * MiB, `memory grew by ${(grewBy / MiB).toFixed(1)} MiB refusing it`);
    return err;
  }

  it('refuses concatenated frames that announce 3.7 GiB in a 140 KB payload (the bomb of issue 9), allocating nothing for them', async () => {
    const bomb = Buffer.concat(Array.from({ length: 950 }, () => zerosZstd));
    assert.ok(bomb.length < 150_000, `bomb of ${bomb.length} bytes`);
    const err = await refusedBounded(bomb);
    assert.match(err.message, /after its zstd frame/);
  });

  it('refuses the largest payload a frame may carry, all of it 4 MiB zstd frames (over 100 GiB announced)', async () => {
    const count = Math.floor((MAX_FRAME_DATA + 60 * 1024) / zerosZstd.length);
    await refusedBounded(Buffer.concat(Array.from({ length: count }, () => zerosZstd)));
  });

  it('refuses a zstd frame that announces no size, and one whose announced size is not the frame length', async () => {
    assert.match((await refusedBounded(withoutContentSize(zerosZstd))).message, /announces no decompressed size/);
    const small = compress(Buffer.alloc(64 * 1024, 0x61), { compressionLevel: 1 });
    assert.match((await refusedBounded(small)).message, /announces 65536 decompressed size, expected 4194304/);
  });

  it('stops a frame that decompresses to more than its header announced at the declared length', async () => {
    // Says 4 MiB (the frame length) and holds 4 MiB + 64 KiB: zstd writes into a 4 MiB + 1 buffer.
    const err = await refusedBounded(lyingZstd(Buffer.alloc(MAX_FRAME_DATA + 64 * 1024), MAX_FRAME_DATA));
    assert.match(err.message, /decompresses to more|does not decompress/);
    // Says 1000 bytes and holds 64 KiB.
    await refusedBounded(lyingZstd(Buffer.alloc(64 * 1024, 0x62), 1000), 1000, Buffer.alloc(1000, 0x62));
  });

  it('refuses a frame that says more than it holds', async () => {
    await refusedBounded(lyingZstd(Buffer.alloc(32 * 1024, 0x63), 65_000), 65_000, Buffer.alloc(65_000, 0x63));
  });

  it('refuses skippable frames before, after, or instead of the data, and bytes after the frame', async () => {
    const note = skippableFrame(Buffer.alloc(1000, 0x20));
    assert.match((await refusedBounded(Buffer.concat([note, zerosZstd]))).message, /is not a zstd frame/);
    await refusedBounded(Buffer.concat([zerosZstd, note]));
    await refusedBounded(note);
    await refusedBounded(Buffer.concat([zerosZstd, Buffer.from('junk')]));
  });

  it('refuses a zstd frame cut short', async () => {
    const cut = compress(randomBytes(200_000), { compressionLevel: 1 });
    await refusedBounded(cut.subarray(0, cut.length - 100), 200_000, Buffer.alloc(200_000));
  });

  it('takes a legitimate 4 MiB frame of zeros (147 bytes of zstd), allocating about its 4 MiB', async () => {
    const { result, grewBy } = await memoryOf(() => decodeAll(forgeStream(header('zeros'), [zstdFrame(zerosZstd)])));
    const data = result.frames.filter((f) => f.kind === FrameKind.Data);
    assert.equal(data.length, 1);
    assert.ok(data[0]!.data.equals(zeros));
    assert.ok(grewBy < 32 * MiB, `memory grew by ${(grewBy / MiB).toFixed(1)} MiB`);
  });

  it('refuses an end frame too long to be a trailer without parsing it', async () => {
    const start = new DeltaStreamEncoder(header('trailer')).start();
    const chain = start.readUInt32BE(start.length - 4);
    const big = Buffer.from(JSON.stringify({ frames: 1, dataBytes: 0, zeroBytes: 0, pad: 'x'.repeat(4000) }));
    const err = await refused([start, sealFrame(chain, 0, { kind: FrameKind.End, length: big.length, payload: big, data: big })], 'STREAM_BAD_FRAME');
    assert.match(err.message, /not a trailer/);
  });
});

describe('delta stream CRC', () => {
  it('joins the CRCs of two byte strings into the CRC of both, as zlib computes it over the bytes', () => {
    for (const [a, b] of [[0, 0], [36, 0], [36, 1], [1, 7], [36, 65536], [5000, 123457], [36, MAX_FRAME_DATA]] as const) {
      const first = randomBytes(a + 1).subarray(1);
      const second = randomBytes(b + 1).subarray(1);
      const seed = 0x9e3779b9;
      assert.equal(crc32Combine(crc32(first, seed), crc32(second), b), crc32(Buffer.concat([first, second]), seed), `${a} + ${b} bytes`);
    }
  });
});
