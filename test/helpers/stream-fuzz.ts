/**
 * Structure-aware mutation of valid delta streams, for the fuzz suites. A valid stream (made by
 * the real encoder) is taken apart into its fields; one mutator changes one thing in it (a frame
 * field, the frame list, a zstd payload's insides, the header JSON, the trailer), and the stream is
 * written out again, most often with its CRC chain recomputed so the change gets past the
 * checksums and reaches the checks behind them. Some cases then get one byte-level change
 * (flips, a cut, a splice) and every case is cut into random chunks as a network delivers it.
 *
 * Each case says whether the decoder must refuse it. A mutator that can produce a stream that is
 * still valid (a zero frame moved within its disk, two frames swapped and renumbered) says
 * `mustRefuse: false`; such cases only check that the decoder refuses cleanly or accepts, never
 * crashes. Only one structural mutation is applied per case, so the flag stays exact.
 */
import { crc32 } from 'node:zlib';
import { compress } from 'zstd-napi';
import { NAME_PATTERN } from '../../plugin/config/schema.js';
import { Codec, FRAME_HEADER_BYTES, FrameKind, MAX_FRAME_DATA, STREAM_PREFIX_BYTES } from '../../plugin/replication/stream/format.js';
import { contentSizeField, skippableFrame } from './stream-forge.js';
import type { EncodedStream, Prng } from './receiver-lab.js';

interface Fields {
  magic: number;
  seq: bigint;
  kind: number;
  codec: number;
  disk: number;
  offset: bigint;
  length: number;
  payloadLength: number;
  dataCrc: number;
  crc: number;
  payload: Buffer;
}

/** A stream taken apart. `json` is the header as sent; `header` the same, parsed. */
interface Model {
  prefix: Buffer;
  json: Buffer;
  /** The header length field, when a mutator lies in it; else the JSON's length. */
  headerLength?: number;
  frames: Fields[];
  /** The source stream's header CRC: kept when not resealing. */
  chain: number;
  /** Recompute the header CRC and every frame's chained CRC when writing out. */
  reseal: boolean;
  /** Frame numbers rewritten to 0, 1, 2… when writing out (after list mutations). */
  renumber: boolean;
  /** Recompute the end frame's trailer from the frames when writing out. */
  fixTrailer: boolean;
}

export interface FuzzCase {
  /** The mutators applied, e.g. "frame.length+reseal | bytes.flip". */
  name: string;
  chunks: Buffer[];
  mustRefuse: boolean;
  /** The case's bytes are the valid stream's bytes. */
  identical: boolean;
}

function parse(stream: EncodedStream): Model {
  const length = stream.start.readUInt32BE(12);
  return {
    prefix: Buffer.from(stream.start.subarray(0, STREAM_PREFIX_BYTES)),
    json: Buffer.from(stream.start.subarray(STREAM_PREFIX_BYTES, STREAM_PREFIX_BYTES + length)),
    frames: stream.frames.map((f) => ({
      magic: f.readUInt32BE(0),
      seq: f.readBigUInt64BE(4),
      kind: f.readUInt8(12),
      codec: f.readUInt8(13),
      disk: f.readUInt16BE(14),
      offset: f.readBigUInt64BE(16),
      length: f.readUInt32BE(24),
      payloadLength: f.readUInt32BE(28),
      dataCrc: f.readUInt32BE(32),
      crc: f.readUInt32BE(36),
      payload: Buffer.from(f.subarray(FRAME_HEADER_BYTES)),
    })),
    chain: stream.start.readUInt32BE(stream.start.length - 4),
    reseal: false,
    renumber: false,
    fixTrailer: false,
  };
}

function write(m: Model): Buffer {
  const prefix = Buffer.from(m.prefix);
  prefix.writeUInt32BE(m.headerLength ?? m.json.length, 12);
  const start = Buffer.alloc(STREAM_PREFIX_BYTES + m.json.length + 4);
  prefix.copy(start, 0);
  m.json.copy(start, STREAM_PREFIX_BYTES);
  const chain = m.reseal ? crc32(start.subarray(0, STREAM_PREFIX_BYTES + m.json.length)) : m.chain;
  start.writeUInt32BE(chain, STREAM_PREFIX_BYTES + m.json.length);
  const frames = m.frames.map((f, i) => ({ ...f, seq: m.renumber ? BigInt(i) : f.seq }));
  if (m.fixTrailer) {
    const end = frames.find((f) => f.kind === FrameKind.End);
    if (end) {
      const data = frames.filter((f) => f.kind === FrameKind.Data).reduce((n, f) => n + f.length, 0);
      const zero = frames.filter((f) => f.kind === FrameKind.Zero).reduce((n, f) => n + f.length, 0);
      end.payload = Buffer.from(JSON.stringify({ frames: frames.length, dataBytes: data, zeroBytes: zero }));
      end.length = end.payloadLength = end.payload.length;
      end.dataCrc = crc32(end.payload);
    }
  }
  const out: Buffer[] = [start];
  for (const f of frames) {
    const h = Buffer.alloc(FRAME_HEADER_BYTES);
    h.writeUInt32BE(f.magic, 0);
    h.writeBigUInt64BE(BigInt.asUintN(64, f.seq), 4);
    h.writeUInt8(f.kind, 12);
    h.writeUInt8(f.codec, 13);
    h.writeUInt16BE(f.disk, 14);
    h.writeBigUInt64BE(BigInt.asUintN(64, f.offset), 16);
    h.writeUInt32BE(f.length >>> 0, 24);
    h.writeUInt32BE(f.payloadLength >>> 0, 28);
    h.writeUInt32BE(f.dataCrc >>> 0, 32);
    h.writeUInt32BE(m.reseal ? crc32(f.payload, crc32(h.subarray(0, 36), chain)) : f.crc, 36);
    out.push(h, f.payload);
  }
  return Buffer.concat(out);
}

type Verdict = 'refuse' | 'either';
type Mutator = (m: Model, rng: Prng, ctx: Context) => Verdict;

interface Context {
  /** Another valid stream (another session) to take frames and bytes from. */
  other: EncodedStream;
  diskSizes: number[];
}

const U32 = 0xffff_ffff;
const dataFrames = (m: Model) => m.frames.filter((f) => f.kind === FrameKind.Data);
const zstdFrames = (m: Model) => m.frames.filter((f) => f.kind === FrameKind.Data && f.codec === Codec.Zstd);
const bodyFrames = (m: Model) => m.frames.filter((f) => f.kind !== FrameKind.End);
const other = <T>(rng: Prng, choices: readonly T[], not: T): T => {
  const left = choices.filter((c) => c !== not);
  return rng.pick(left);
};

/** A value for a numeric field: edge values of its width, neighbours of the old value, anything. */
function numberNear(rng: Prng, old: number, max: number): number {
  const v = rng.pick([0, 1, old - 1, old + 1, old * 2, max, max - 1, MAX_FRAME_DATA, MAX_FRAME_DATA + 1, rng.int(0, max)]);
  return Math.min(max, Math.max(0, v));
}

/** Frame field mutators: one field of one frame. */
const frameField: Record<string, Mutator> = {
  seq: (m, rng) => {
    const f = rng.pick(m.frames);
    f.seq = other(rng, [f.seq + 1n, f.seq - 1n, 0n, 1n << 32n, (1n << 53n) + 1n, (1n << 64n) - 1n, BigInt(rng.int(0, 1000))], f.seq);
    return 'refuse';
  },
  kind: (m, rng) => {
    const f = rng.pick(m.frames);
    f.kind = other(rng, [0, 1, 2, 3, 4, 255], f.kind);
    return 'refuse';
  },
  codec: (m, rng) => {
    const f = rng.pick(m.frames);
    f.codec = other(rng, [0, 1, 2, 255], f.codec);
    return 'refuse';
  },
  disk: (m, rng, ctx) => {
    const f = rng.pick(m.frames);
    f.disk = other(rng, [0, 1, 2, ctx.diskSizes.length, 255, 65535], f.disk);
    // Another disk the extent fits on is a valid (different) stream.
    const size = ctx.diskSizes[f.disk];
    if (f.kind === FrameKind.End || size === undefined) return 'refuse';
    return f.offset + BigInt(f.length) <= BigInt(size) ? 'either' : 'refuse';
  },
  offset: (m, rng, ctx) => {
    const f = rng.pick(m.frames);
    const size = BigInt(ctx.diskSizes[f.disk] ?? 0);
    f.offset = other(rng, [0n, size - BigInt(f.length), size - BigInt(f.length) + 1n, size, (1n << 63n) - 1n, (1n << 64n) - 1n, 1n << 53n, BigInt(rng.int(0, Number(size)))], f.offset);
    if (f.offset < 0n) f.offset = 0n;
    if (f.kind === FrameKind.End) return 'refuse';
    return f.offset + BigInt(f.length) <= size ? 'either' : 'refuse';
  },
  length: (m, rng) => {
    const f = rng.pick(m.frames);
    const was = f.length;
    f.length = numberNear(rng, f.length, U32);
    return f.length === was ? 'either' : 'refuse';
  },
  payloadLength: (m, rng) => {
    const f = rng.pick(m.frames);
    const was = f.payloadLength;
    f.payloadLength = numberNear(rng, f.payloadLength, U32);
    return f.payloadLength === was ? 'either' : 'refuse';
  },
  dataCrc: (m, rng) => {
    const f = rng.pick(m.frames);
    f.dataCrc = other(rng, [0, U32, (f.dataCrc ^ 1) >>> 0, rng.int(0, U32)], f.dataCrc);
    return 'refuse';
  },
  magic: (m, rng) => {
    rng.pick(m.frames).magic = rng.pick([0, 0x56444632, U32]);
    return 'refuse';
  },
  crc: (m, rng) => {
    const f = rng.pick(m.frames);
    m.reseal = false;
    f.crc = (f.crc ^ (1 << rng.int(0, 31))) >>> 0;
    return 'refuse';
  },
};

/** Frame list mutators: frames dropped, repeated, moved, taken from another stream. */
const frameList: Record<string, Mutator> = {
  drop: (m, rng) => {
    m.frames.splice(m.frames.indexOf(rng.pick(m.frames)), 1);
    m.renumber = rng.next() < 0.7;
    return 'refuse';
  },
  dropAndFixTrailer: (m, rng) => {
    m.frames.splice(m.frames.indexOf(rng.pick(bodyFrames(m))), 1);
    m.renumber = m.fixTrailer = true;
    return 'either';
  },
  duplicate: (m, rng) => {
    const f = rng.pick(m.frames);
    m.frames.splice(m.frames.indexOf(f), 0, { ...f });
    m.renumber = rng.next() < 0.7;
    return 'refuse';
  },
  duplicateAndFixTrailer: (m, rng) => {
    const f = rng.pick(bodyFrames(m));
    m.frames.splice(m.frames.indexOf(f), 0, { ...f });
    m.renumber = m.fixTrailer = true;
    return 'either';
  },
  swap: (m, rng) => {
    const body = bodyFrames(m);
    if (body.length < 2) return frameList['drop']!(m, rng, undefined as never);
    const i = rng.int(0, body.length - 2);
    [m.frames[i], m.frames[i + 1]] = [m.frames[i + 1]!, m.frames[i]!];
    m.renumber = rng.next() < 0.5;
    // Renumbered, two frames swapped are a valid stream writing in another order.
    return m.renumber ? 'either' : 'refuse';
  },
  foreign: (m, rng, ctx) => {
    const theirs = parse(ctx.other).frames;
    const f = rng.pick(theirs.filter((x) => x.kind !== FrameKind.End));
    const at = rng.int(0, m.frames.length - 1);
    const replace = rng.next() < 0.5;
    m.frames.splice(at, replace ? 1 : 0, f);
    m.renumber = rng.next() < 0.5;
    // Resealed in place of a frame of the same kind and length, it is a valid stream with other data.
    return replace && m.reseal ? 'either' : 'refuse';
  },
  noEnd: (m) => {
    m.frames = m.frames.filter((f) => f.kind !== FrameKind.End);
    return 'refuse';
  },
  afterEnd: (m, rng) => {
    m.frames.push({ ...rng.pick(m.frames) });
    m.renumber = true;
    return 'refuse';
  },
};

let zeros: Buffer | undefined;
/** 4 MiB of zeros as one zstd frame (147 bytes), made once: the bombs' building block. */
const zerosFrame = () => (zeros ??= Buffer.from(compress(Buffer.alloc(MAX_FRAME_DATA), { compressionLevel: 1 })));

const setPayload = (f: Fields, payload: Buffer) => {
  f.payload = payload;
  f.payloadLength = payload.length;
};

/** zstd payload mutators: the inside of a compressed data frame, its own length fields in step. */
const zstdInside: Record<string, Mutator> = {
  contentSize: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    const z = Buffer.from(f.payload);
    const { at, bytes } = contentSizeField(z);
    // The field as stored: a 2-byte field holds the size minus 256 (RFC 8878).
    const read = () => (bytes === 1 ? z.readUInt8(at) : bytes === 2 ? z.readUInt16LE(at) : bytes === 4 ? z.readUInt32LE(at) : Number(z.readBigUInt64LE(at)));
    const max = bytes === 1 ? 255 : bytes === 2 ? 65535 : bytes === 4 ? U32 : Number.MAX_SAFE_INTEGER;
    const was = read();
    const v = other(rng, [0, 1, was - 1, was + 1, max, rng.int(0, Math.min(max, U32))], was);
    const value = Math.min(max, Math.max(0, v));
    if (bytes === 1) z.writeUInt8(value, at);
    else if (bytes === 2) z.writeUInt16LE(value, at);
    else if (bytes === 4) z.writeUInt32LE(value, at);
    else z.writeBigUInt64LE(BigInt(value), at);
    setPayload(f, z);
    return value === was ? 'either' : 'refuse';
  },
  concatenated: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    // A thousand 4 MiB frames of zeros are 150 KB and announce 4 GiB: the bomb of issue 9.
    const copies = Math.max(2, Math.min(rng.pick([2, 3, 10, 1000]), Math.floor((256 * 1024) / f.payload.length)));
    setPayload(f, Buffer.concat(Array.from({ length: copies }, () => f.payload)));
    return 'refuse';
  },
  bomb: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    setPayload(f, Buffer.concat(Array.from({ length: rng.int(1, 1000) }, () => zerosFrame())));
    return f.length === MAX_FRAME_DATA ? 'either' : 'refuse';
  },
  skippable: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    const note = skippableFrame(rng.bytes(rng.int(0, 64)));
    setPayload(f, rng.next() < 0.5 ? Buffer.concat([note, f.payload]) : Buffer.concat([f.payload, note]));
    return 'refuse';
  },
  cut: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    setPayload(f, f.payload.subarray(0, rng.int(0, f.payload.length - 1)));
    return 'refuse';
  },
  trailing: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    setPayload(f, Buffer.concat([f.payload, rng.bytes(rng.int(1, 16))]));
    return 'refuse';
  },
  flipInside: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    const z = Buffer.from(f.payload);
    const at = rng.int(4, z.length - 1);
    z[at] = z[at]! ^ (1 << rng.int(0, 7));
    setPayload(f, z);
    // Usually refused (zstd or the data CRC), but a flipped bit zstd never reads is possible.
    return 'either';
  },
  descriptor: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    const z = Buffer.from(f.payload);
    // Window descriptor, checksum flag, dictionary id flag: decoder limits rather than data.
    z[4] = z[4]! ^ (1 << rng.int(0, 7));
    if (!(z[4]! & 0x20) && rng.next() < 0.5) z[5] = rng.pick([0xf8, 0xff, 0x00, 0x60]);
    setPayload(f, z);
    return 'either';
  },
  otherData: (m, rng) => {
    const f = rng.pick(zstdFrames(m));
    // Well-formed zstd of other bytes of the same length: only the data CRC can tell.
    setPayload(f, Buffer.from(compress(Buffer.alloc(f.length, rng.int(0, 255)), { compressionLevel: 1 })));
    return 'either';
  },
  rawAsZstd: (m, rng) => {
    const f = rng.pick(dataFrames(m));
    f.codec = f.codec === Codec.Zstd ? Codec.Raw : Codec.Zstd;
    return 'refuse';
  },
};

const HEADER_KEYS = ['session', 'protection', 'checkpoint', 'since', 'base', 'kind', 'disks', 'createdAt'] as const;
const BAD_VALUES: unknown[] = [0, -1, 1.5, true, [], {}, '', 1e308, 'x'.repeat(70_000)];
const ODD_STRINGS = ['\u{1F4A5}', '\u0000', '\u202Eevil', '\ud800', 'a'.repeat(2000), '../../etc/passwd', 'vda/../vdb', ' ', '\n'];
const BAD_DATES = ['garbage', '', '2026-13-45T00:00:00Z', '2026-11-24', '2026-11-24T12:00:00+25:00', 'Tue, 24 Nov 2026 12:00:00 GMT'];
const ODD_DATES = ['9999-12-31T23:59:59.999Z', '1970-01-01T00:00:00.000Z', '0001-01-01T00:00:00Z', '2026-11-24T12:00:00.123456789Z'];

/** Header JSON mutators: the header re-serialised, its length field and CRC in step. */
const headerJson: Record<string, Mutator> = {
  badValue: (m, rng) => {
    const h = JSON.parse(m.json.toString('utf8')) as Record<string, unknown>;
    const key = rng.pick(HEADER_KEYS);
    h[key] = key === 'createdAt' ? rng.pick([...BAD_DATES, ...BAD_VALUES]) : key === 'kind' ? rng.pick(['bogus', 'FULL', ...BAD_VALUES]) : rng.pick(BAD_VALUES);
    m.json = Buffer.from(JSON.stringify(h));
    // An empty array for disks, a number for a string: all refused by the schema. null is valid for since/base only.
    return 'refuse';
  },
  nullable: (m, rng) => {
    const h = JSON.parse(m.json.toString('utf8')) as Record<string, unknown>;
    const key = rng.pick(HEADER_KEYS);
    h[key] = null;
    m.json = Buffer.from(JSON.stringify(h));
    return key === 'since' || key === 'base' ? 'either' : 'refuse';
  },
  missing: (m, rng) => {
    const h = JSON.parse(m.json.toString('utf8')) as Record<string, unknown>;
    delete h[rng.pick(HEADER_KEYS)];
    m.json = Buffer.from(JSON.stringify(h));
    return 'refuse';
  },
  extraKey: (m, rng) => {
    const key = rng.pick(['extra', 'constructor', 'toString', 'Session', 'disks ', '\u0000']);
    const h = JSON.parse(m.json.toString('utf8')) as Record<string, unknown>;
    h[key] = rng.pick([1, 'x', null, {}]);
    m.json = Buffer.from(JSON.stringify(h));
    return 'refuse';
  },
  proto: (m) => {
    // JSON.parse makes "__proto__" an own key; a schema must see it as one more unknown key.
    m.json = Buffer.from(m.json.toString('utf8').replace(/^\{/, '{"__proto__":{"polluted":1},'));
    return 'refuse';
  },
  oddString: (m, rng) => {
    const h = JSON.parse(m.json.toString('utf8')) as Record<string, unknown> & { disks: { name: unknown }[] };
    const s = rng.pick(ODD_STRINGS);
    const disk = rng.next() < 0.3;
    if (disk) h.disks[0]!.name = s;
    else h[rng.pick(['session', 'protection', 'checkpoint', 'since', 'base'])] = s;
    m.json = Buffer.from(JSON.stringify(h));
    // A disk name becomes a directory on the DR site: only the config's name rule passes.
    return disk && !NAME_PATTERN.test(s) ? 'refuse' : 'either';
  },
  date: (m, rng) => {
    const h = JSON.parse(m.json.toString('utf8')) as Record<string, unknown>;
    const odd = rng.next() < 0.4;
    h['createdAt'] = rng.pick(odd ? ODD_DATES : BAD_DATES);
    m.json = Buffer.from(JSON.stringify(h));
    return odd ? 'either' : 'refuse';
  },
  diskSize: (m, rng) => {
    const h = JSON.parse(m.json.toString('utf8')) as { disks: { sizeBytes: unknown }[] };
    const bad = rng.next() < 0.6;
    h.disks[rng.int(0, h.disks.length - 1)]!.sizeBytes = bad ? rng.pick([-1, 0.5, 2 ** 53, 1e308, '1024', null]) : rng.pick([0, 512, 2 ** 52]);
    m.json = Buffer.from(JSON.stringify(h));
    // A smaller disk may leave a frame past its end, or not: the decoder decides.
    return bad ? 'refuse' : 'either';
  },
  manyDisks: (m, rng) => {
    const h = JSON.parse(m.json.toString('utf8')) as { disks: unknown[] };
    // 40 disks fit the header limit and reach the receiver (which must refuse what its replica
    // does not have, before it starts a qemu-nbd per disk); 3000 are past the 64 KiB limit.
    const n = rng.pick([0, 40, 3000]);
    h.disks = [...h.disks, ...Array.from({ length: n }, (_, i) => ({ name: `vd${i}`, sizeBytes: 1 << 30 }))];
    if (n === 0 || rng.next() < 0.3) h.disks = [];
    m.json = Buffer.from(JSON.stringify(h));
    return h.disks.length === 0 || m.json.length > 64 * 1024 ? 'refuse' : 'either';
  },
  notJson: (m, rng) => {
    const text = m.json.toString('utf8');
    m.json = Buffer.from(
      rng.pick([
        text.slice(0, rng.int(0, text.length - 1)),
        `\ufeff${text}`,
        `[${text}]`,
        `${text}x`,
        '[]',
        'null',
        '1e999',
        '"just a string"',
        `${'['.repeat(30_000)}${']'.repeat(30_000)}`,
        text.replace(/"sizeBytes":\d+/, '"sizeBytes":1e999'),
      ]),
    );
    return 'refuse';
  },
  lengthField: (m, rng) => {
    m.headerLength = other(rng, [0, m.json.length - 1, m.json.length + 1, 64 * 1024 + 1, U32], m.json.length);
    return 'refuse';
  },
  version: (m, rng) => {
    m.prefix.writeUInt16BE(other(rng, [0, 2, 256, 65535], 1), 8);
    return 'refuse';
  },
  magic: (m, rng) => {
    const at = rng.int(0, 7);
    m.prefix[at] = m.prefix[at]! ^ (1 << rng.int(0, 7));
    return 'refuse';
  },
  reserved: (m, rng) => {
    m.prefix.writeUInt16BE(rng.int(1, 65535), 10);
    return 'either';
  },
};

/** End frame mutators: the trailer's JSON, its frame's fields in step. */
const trailer: Record<string, Mutator> = {
  counts: (m, rng) => {
    const end = m.frames.find((f) => f.kind === FrameKind.End)!;
    const t = JSON.parse(end.payload.toString('utf8')) as Record<string, unknown>;
    const key = rng.pick(['frames', 'dataBytes', 'zeroBytes']);
    const was = t[key] as number;
    t[key] = other(rng, [was + 1, was - 1, -1, 0, 1.5, 1e308, String(was), null], was);
    if (rng.next() < 0.2) t['extra'] = 1;
    setPayload(end, Buffer.from(JSON.stringify(t)));
    end.length = end.payloadLength;
    end.dataCrc = crc32(end.payload);
    return 'refuse';
  },
  garbage: (m, rng) => {
    const end = m.frames.find((f) => f.kind === FrameKind.End)!;
    setPayload(end, rng.pick([Buffer.alloc(0), Buffer.from('{'), Buffer.from('[]'), rng.bytes(rng.int(1, 2000)), Buffer.alloc(5000, 0x20)]));
    end.length = end.payloadLength;
    end.dataCrc = crc32(end.payload);
    return 'refuse';
  },
};

/** Byte-level changes to the written stream: always refused unless they happen to change nothing. */
const bytes: Record<string, (b: Buffer, rng: Prng, ctx: Context) => Buffer> = {
  flip: (b, rng) => {
    const out = Buffer.from(b);
    for (let i = rng.int(1, 8); i > 0; i--) {
      const at = rng.int(0, out.length - 1);
      out[at] = out[at]! ^ (1 << rng.int(0, 7));
    }
    return out;
  },
  cut: (b, rng) => b.subarray(0, rng.int(0, b.length - 1)),
  insert: (b, rng) => {
    const at = rng.int(0, b.length);
    return Buffer.concat([b.subarray(0, at), rng.bytes(rng.int(1, 100)), b.subarray(at)]);
  },
  remove: (b, rng) => {
    const at = rng.int(0, b.length - 1);
    return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + rng.int(1, 1000)))]);
  },
  splice: (b, rng, ctx) => {
    const theirs = Buffer.concat([ctx.other.start, ...ctx.other.frames]);
    const at = rng.int(0, b.length - 1);
    const from = rng.int(0, theirs.length - 1);
    const n = rng.int(1, 4096);
    return Buffer.concat([b.subarray(0, at), theirs.subarray(from, from + n), b.subarray(at + n)]);
  },
};

const FAMILIES: [string, Record<string, Mutator>, number][] = [
  ['frame', frameField, 30],
  ['list', frameList, 12],
  ['zstd', zstdInside, 20],
  ['header', headerJson, 25],
  ['trailer', trailer, 5],
];
const TOTAL_WEIGHT = FAMILIES.reduce((n, f) => n + f[2], 0);

/** Every structural mutator as "family.name": a suite's short run gives each one case first. */
export const MUTATORS: readonly string[] = FAMILIES.flatMap(([family, mutators]) => Object.keys(mutators).map((name) => `${family}.${name}`));

/** Chunks of random sizes, as a network delivers a body (sometimes one byte at a time). */
function rechunk(b: Buffer, rng: Prng): Buffer[] {
  if (rng.next() < 0.5) return [b];
  // At most about 20,000 chunks: one byte at a time for a small stream, coarser for a large one
  // (half a million one-byte chunks cost the test seconds and memory, and the decoder nothing new).
  const max = Math.max(rng.pick([1, 7, 1500, 16 * 1024, 64 * 1024]), Math.ceil(b.length / 10_000));
  const out: Buffer[] = [];
  for (let at = 0; at < b.length; ) {
    const n = rng.int(1, max);
    out.push(b.subarray(at, at + n));
    at += n;
  }
  return out;
}

/**
 * One hostile case made from `stream`: one structural mutation (reseal most of the time), then,
 * one time in four, one byte-level change; the same `rng` state gives the same case. `mutator`
 * (one of MUTATORS) instead of one drawn at random.
 */
export function mutate(stream: EncodedStream, ctx: Context, rng: Prng, mutator?: string): FuzzCase {
  const valid = Buffer.concat([stream.start, ...stream.frames]);
  const m = parse(stream);
  m.reseal = rng.next() < 0.8;
  let pick = rng.next() * TOTAL_WEIGHT;
  let family = FAMILIES[0]!;
  for (const f of FAMILIES) {
    family = f;
    if ((pick -= f[2]) < 0) break;
  }
  if (mutator) family = FAMILIES.find((f) => f[0] === mutator.split('.')[0])!;
  let [familyName, mutators] = family;
  if (familyName === 'zstd' && zstdFrames(m).length === 0) [familyName, mutators] = ['frame', frameField];
  const drawn = rng.pick(Object.keys(mutators));
  const name = mutator && familyName === mutator.split('.')[0] ? mutator.split('.')[1]! : drawn;
  let verdict = mutators[name]!(m, rng, ctx);
  let label = `${familyName}.${name}${m.reseal ? '+reseal' : ''}`;
  let out = write(m);
  if (rng.next() < 0.25) {
    const byteName = rng.pick(Object.keys(bytes));
    out = bytes[byteName]!(out, rng, ctx);
    label += ` | bytes.${byteName}`;
    verdict = 'refuse';
  }
  const identical = out.equals(valid);
  // Without resealing, any change to what the CRCs cover is a checksum mismatch.
  if (!m.reseal && !identical) verdict = 'refuse';
  return { name: label, chunks: rechunk(out, rng), mustRefuse: !identical && verdict === 'refuse', identical };
}


/**
 * The run's seed (fixed unless VMDR_FUZZ_SEED says otherwise, so CI runs the same cases every
 * time), its number of cases (VMDR_FUZZ_CASES, or the variable named) and the one case to replay
 * (VMDR_FUZZ_ONLY).
 */
export function fuzzSettings(defaultCases: number, casesVariable = 'VMDR_FUZZ_CASES'): { seed: number; cases: number; only?: number } {
  const int = (name: string): number | undefined => {
    const v = process.env[name];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v} is not a non-negative integer`);
    return n;
  };
  const only = int('VMDR_FUZZ_ONLY');
  return { seed: int('VMDR_FUZZ_SEED') ?? 0x5eed_1009, cases: int(casesVariable) ?? defaultCases, ...(only === undefined ? {} : { only }) };
}
