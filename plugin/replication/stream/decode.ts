/**
 * Reads and checks a delta stream (docs/delta-stream.md). Every frame is verified before it is
 * yielded: magic, sequence, bounds, the chained CRC of header and payload, and after
 * decompression the CRC and length of the data. The caller applies frames as they come but commits
 * nothing until the End frame has been yielded, which only happens when the trailer's counts agree
 * with what was received.
 */
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import { NAME_PATTERN } from '../../config/schema.js';
import {
  Codec,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  FrameKind,
  MAX_FRAME_DATA,
  MAX_HEADER_BYTES,
  STREAM_MAGIC,
  STREAM_PREFIX_BYTES,
  STREAM_VERSION,
  type Frame,
  type StreamHeader,
} from './format.js';
import {
  StreamError,
  STREAM_BAD_FRAME,
  STREAM_BAD_HEADER,
  STREAM_BAD_MAGIC,
  STREAM_CHECKSUM_MISMATCH,
  STREAM_OUT_OF_ORDER,
  STREAM_TRUNCATED,
  STREAM_VERSION_UNSUPPORTED,
} from './errors.js';
import { giveBackFrameBuffer, POOLED_FROM_BYTES, takeFrameBuffer } from './frame-buffers.js';
import { decompressFrame } from './zstd.js';

/** A consistency group instant: `<group>@<ms>` (replication/group-cycle.ts). */
const GROUP_INSTANT_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}@[0-9]{1,15}$/;

const HeaderSchema = z.strictObject({
  session: z.string().min(1),
  protection: z.string().min(1),
  checkpoint: z.string().min(1),
  since: z.string().min(1).nullable(),
  base: z.string().min(1).nullable(),
  kind: z.enum(['full', 'incremental', 'resync']),
  // Disk names become directory names on the DR site: the config's name rule, and each once.
  disks: z
    .array(z.strictObject({ name: z.string().regex(NAME_PATTERN, 'a disk name of letters, digits, ".", "-" or "_"'), sizeBytes: z.number().int().nonnegative() }))
    .min(1)
    .refine((disks) => new Set(disks.map((d) => d.name)).size === disks.length, 'disk names must be distinct'),
  createdAt: z.iso.datetime(),
  dataBytes: z.number().int().nonnegative().optional(),
  consistency: z.enum(['application', 'crash']).optional(),
  consistencyIssue: z.strictObject({ code: z.string().regex(/^[a-z][a-z-]{0,63}$/, 'a code of lower-case letters and "-"'), message: z.string().max(2000) }).optional(),
  // A freeze is bounded by minutes; an hour is room enough and keeps nonsense out of the state file.
  freezeWindowMs: z.number().int().nonnegative().max(3_600_000).optional(),
  groupInstant: z.string().regex(GROUP_INSTANT_PATTERN, 'a group instant "<group>@<ms>"').optional(),
});

const TrailerSchema = z.strictObject({
  frames: z.number().int().positive(),
  dataBytes: z.number().int().nonnegative(),
  zeroBytes: z.number().int().nonnegative(),
});

/** zstd's worst case for incompressible input is a little larger than the input. */
const MAX_PAYLOAD = MAX_FRAME_DATA + 64 * 1024;
/** The end frame's JSON trailer is three counts: anything longer is not one. */
const MAX_TRAILER_BYTES = 1024;

/** Reads exact byte counts from a chunked source without copying more than once. */
class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private readonly iterator: AsyncIterator<Buffer | Uint8Array | string>;
  private done = false;

  constructor(source: AsyncIterable<Buffer | Uint8Array | string>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  /**
   * Resolves with exactly n bytes, or undefined at a clean end of input before the first byte.
   * Bytes spread over several chunks are gathered into `into` when it is large enough.
   */
  async read(n: number, what: string, into?: Buffer): Promise<Buffer | undefined> {
    if (n === 0) return Buffer.alloc(0);
    while (this.buffered < n && !this.done) {
      const next = await this.iterator.next();
      if (next.done) this.done = true;
      else {
        const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
        this.chunks.push(chunk);
        this.buffered += chunk.length;
      }
    }
    if (this.buffered < n) {
      if (this.buffered === 0) return undefined;
      throw new StreamError(STREAM_TRUNCATED, `input ended inside ${what} (${this.buffered} of ${n} bytes)`);
    }
    return this.take(n, into);
  }

  async atEnd(): Promise<boolean> {
    return (await this.read(1, 'trailing data')) === undefined;
  }

  private take(n: number, into?: Buffer): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = into && into.length >= n ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const used = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, used);
      filled += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    this.buffered -= n;
    return out;
  }
}

/** Gives `buffer` back once, however often it is called. */
function releaser(buffer: Buffer): () => void {
  let given = false;
  return () => {
    if (!given) giveBackFrameBuffer(buffer);
    given = true;
  };
}

export interface DecodedStream {
  header: StreamHeader;
  frames: AsyncGenerator<Frame, void, undefined>;
}

export async function decodeDeltaStream(source: AsyncIterable<Buffer | Uint8Array | string>): Promise<DecodedStream> {
  const reader = new ByteReader(source);
  const prefix = await reader.read(STREAM_PREFIX_BYTES, 'the stream header');
  if (!prefix) throw new StreamError(STREAM_TRUNCATED, 'empty input');
  if (!prefix.subarray(0, 8).equals(STREAM_MAGIC)) throw new StreamError(STREAM_BAD_MAGIC, 'not a vmdr delta stream (bad magic)');
  const version = prefix.readUInt16BE(8);
  if (version !== STREAM_VERSION) {
    throw new StreamError(STREAM_VERSION_UNSUPPORTED, `version ${version} is not supported (this receiver reads ${STREAM_VERSION})`);
  }
  const length = prefix.readUInt32BE(12);
  if (length > MAX_HEADER_BYTES) throw new StreamError(STREAM_BAD_HEADER, `header of ${length} bytes is too large`);
  const json = await reader.read(length + 4, 'the stream header');
  if (!json) throw new StreamError(STREAM_TRUNCATED, 'input ended inside the stream header');
  const chain = crc32(json.subarray(0, length), crc32(prefix));
  if (chain !== json.readUInt32BE(length)) throw new StreamError(STREAM_CHECKSUM_MISMATCH, 'stream header checksum mismatch');
  let header: StreamHeader;
  try {
    header = HeaderSchema.parse(JSON.parse(json.subarray(0, length).toString('utf8')));
  } catch (err) {
    // One line naming the field: zod's own message is a multi-line JSON dump.
    const issue = err instanceof z.ZodError ? err.issues[0] : undefined;
    const why = issue ? `${issue.path.length > 0 ? issue.path.join('.') : 'the header'}: ${issue.message}` : (err as Error).message.split('\n')[0];
    throw new StreamError(STREAM_BAD_HEADER, `stream header is not valid: ${why}`);
  }
  return { header, frames: readFrames(reader, header, chain) };
}

async function* readFrames(reader: ByteReader, header: StreamHeader, chain: number): AsyncGenerator<Frame, void, undefined> {
  let expected = 0;
  let dataBytes = 0;
  let zeroBytes = 0;
  for (;;) {
    const h = await reader.read(FRAME_HEADER_BYTES, `frame ${expected}`);
    if (!h) throw new StreamError(STREAM_TRUNCATED, `input ended after ${expected} frames without an end frame`, { seq: expected });
    if (h.readUInt32BE(0) !== FRAME_MAGIC) throw new StreamError(STREAM_BAD_FRAME, `frame ${expected} has a bad magic`, { seq: expected });
    const seq = Number(h.readBigUInt64BE(4));
    const kind = h.readUInt8(12) as FrameKind;
    const codec = h.readUInt8(13) as Codec;
    const disk = h.readUInt16BE(14);
    const offset = Number(h.readBigUInt64BE(16));
    const length = h.readUInt32BE(24);
    const payloadLength = h.readUInt32BE(28);
    const dataCrc = h.readUInt32BE(32);
    const at = { seq, offset };
    if (payloadLength > MAX_PAYLOAD) throw new StreamError(STREAM_BAD_FRAME, `frame ${seq} announces a ${payloadLength}-byte payload`, at);
    const pooled = payloadLength >= POOLED_FROM_BYTES ? takeFrameBuffer() : undefined;
    const payload = (await reader.read(payloadLength, `frame ${seq}'s payload`, pooled)) ?? Buffer.alloc(0);
    if (payload.length !== payloadLength) throw new StreamError(STREAM_TRUNCATED, `input ended inside frame ${seq}`, at);
    // Checksum before anything else: a replayed frame from another stream fails here, which is
    // more precise than reporting its sequence number as out of order.
    if (crc32(payload, crc32(h.subarray(0, 36), chain)) !== h.readUInt32BE(36)) {
      throw new StreamError(STREAM_CHECKSUM_MISMATCH, `frame ${expected} checksum mismatch (corrupt, or from another stream)`, at);
    }
    if (seq !== expected) throw new StreamError(STREAM_OUT_OF_ORDER, `expected frame ${expected}, got frame ${seq} (replayed or reordered)`, at);
    expected += 1;

    if (kind === FrameKind.End) {
      if (payloadLength > MAX_TRAILER_BYTES) throw new StreamError(STREAM_BAD_FRAME, `end frame carries ${payloadLength} bytes, not a trailer`, at);
      // Every field of a frame means something or is zero: a sealed frame with a stray value was
      // made by something other than our encoder, and is not trusted for the rest.
      if (codec !== Codec.Raw || disk !== 0 || offset !== 0 || length !== payloadLength || dataCrc !== crc32(payload)) {
        throw new StreamError(STREAM_BAD_FRAME, 'end frame has fields an end frame does not carry', at);
      }
      let trailer;
      try {
        trailer = TrailerSchema.parse(JSON.parse(payload.toString('utf8')));
      } catch {
        throw new StreamError(STREAM_BAD_FRAME, 'end frame carries no valid trailer', at);
      }
      if (trailer.frames !== expected || trailer.dataBytes !== dataBytes || trailer.zeroBytes !== zeroBytes) {
        throw new StreamError(
          STREAM_BAD_FRAME,
          `end frame says ${trailer.frames} frames, ${trailer.dataBytes} data and ${trailer.zeroBytes} zero bytes; received ${expected}, ${dataBytes} and ${zeroBytes}`,
          at,
        );
      }
      if (!(await reader.atEnd())) throw new StreamError(STREAM_BAD_FRAME, 'data after the end frame', at);
      yield { kind, seq, trailer };
      return;
    }

    const size = header.disks[disk]?.sizeBytes;
    if (size === undefined) throw new StreamError(STREAM_BAD_FRAME, `frame ${seq} names disk ${disk}; the stream has ${header.disks.length}`, at);
    if (offset + length > size) {
      throw new StreamError(STREAM_BAD_FRAME, `frame ${seq} covers ${offset}+${length}, past the end of disk ${header.disks[disk]!.name} (${size} bytes)`, at);
    }
    if (kind === FrameKind.Zero) {
      if (payloadLength !== 0) throw new StreamError(STREAM_BAD_FRAME, `zero frame ${seq} carries a payload`, at);
      if (codec !== Codec.Raw || dataCrc !== 0) throw new StreamError(STREAM_BAD_FRAME, `zero frame ${seq} has a codec or data checksum`, at);
      zeroBytes += length;
      yield { kind, seq, disk, offset, length };
      continue;
    }
    if (kind !== FrameKind.Data) throw new StreamError(STREAM_BAD_FRAME, `frame ${seq} has unknown kind ${kind}`, at);
    if (length > MAX_FRAME_DATA) throw new StreamError(STREAM_BAD_FRAME, `data frame ${seq} covers ${length} bytes, more than ${MAX_FRAME_DATA}`, at);
    // The announcement is what a quota admitted: a stream may carry less, never more.
    if (header.dataBytes !== undefined && dataBytes + length > header.dataBytes) {
      throw new StreamError(STREAM_BAD_FRAME, `data frame ${seq} brings the data to ${dataBytes + length} bytes, more than the header announced (${header.dataBytes})`, at);
    }
    let data: Buffer;
    // The pooled buffer holding `data`, if any: the payload's (unless one chunk held all of it and
    // nothing was copied), or the one zstd wrote into.
    let holder = pooled && payload.buffer === pooled.buffer ? pooled : undefined;
    if (pooled && !holder) giveBackFrameBuffer(pooled);
    if (codec === Codec.Raw) data = payload;
    else if (codec === Codec.Zstd) {
      const out = length >= POOLED_FROM_BYTES ? takeFrameBuffer() : undefined;
      data = decompressFrame(payload, length, at, out);
      // The compressed bytes are done with; the output is the frame's.
      if (holder) giveBackFrameBuffer(holder);
      holder = out && data.buffer === out.buffer ? out : undefined;
    } else throw new StreamError(STREAM_BAD_FRAME, `frame ${seq} has unknown codec ${codec}`, at);
    if (data.length !== length) throw new StreamError(STREAM_BAD_FRAME, `frame ${seq} holds ${data.length} bytes, announced ${length}`, at);
    if (crc32(data) !== dataCrc) throw new StreamError(STREAM_CHECKSUM_MISMATCH, `frame ${seq} data checksum mismatch`, at);
    dataBytes += length;
    yield holder ? { kind, seq, disk, offset, data, release: releaser(holder) } : { kind, seq, disk, offset, data };
  }
}
