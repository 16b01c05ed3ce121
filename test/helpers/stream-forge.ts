/**
 * Delta streams no honest encoder writes: frames built field by field and sealed with a correct
 * chained CRC, so a hostile payload (a zstd bomb, a lying size) gets past the checksum and reaches
 * the checks behind it. The stream header is written by the real encoder.
 */
import { crc32 } from 'node:zlib';
import { compress } from 'zstd-napi';
import { DeltaStreamEncoder } from '../../plugin/replication/stream/encode.js';
import { Codec, FRAME_HEADER_BYTES, FRAME_MAGIC, FrameKind, type StreamHeader } from '../../plugin/replication/stream/format.js';
import { resealFrame } from './receiver-lab.js';

export interface ForgedFrame {
  kind: number;
  codec?: number;
  disk?: number;
  offset?: number;
  /** The extent the frame covers; for data, what its payload must decompress to. */
  length: number;
  /** Defaults to the CRC of `data` when given, else 0. */
  dataCrc?: number;
  payload?: Buffer;
  /** The bytes the payload claims to be (only used for the default dataCrc). */
  data?: Buffer;
}

/** One frame, header and payload, sealed at `seq` with the stream's chain value. */
export function sealFrame(chain: number, seq: number, f: ForgedFrame): Buffer {
  const payload = f.payload ?? Buffer.alloc(0);
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32BE(FRAME_MAGIC, 0);
  h.writeBigUInt64BE(BigInt(seq), 4);
  h.writeUInt8(f.kind, 12);
  h.writeUInt8(f.codec ?? Codec.Raw, 13);
  h.writeUInt16BE(f.disk ?? 0, 14);
  h.writeBigUInt64BE(BigInt(f.offset ?? 0), 16);
  h.writeUInt32BE(f.length, 24);
  h.writeUInt32BE(payload.length, 28);
  h.writeUInt32BE(f.dataCrc ?? (f.data ? crc32(f.data) : 0), 32);
  return resealFrame(Buffer.concat([h, payload]), chain, () => undefined);
}

/**
 * A whole stream: the encoder's start, the forged frames in order, and an end frame whose trailer
 * agrees with them, so that only what the frames themselves carry can get the stream refused.
 */
export function forgeStream(header: StreamHeader, frames: ForgedFrame[]): Buffer[] {
  const start = new DeltaStreamEncoder(header).start();
  const chain = start.readUInt32BE(start.length - 4);
  const out = [start, ...frames.map((f, i) => sealFrame(chain, i, f))];
  const trailer = {
    frames: frames.length + 1,
    dataBytes: frames.filter((f) => f.kind === FrameKind.Data).reduce((n, f) => n + f.length, 0),
    zeroBytes: frames.filter((f) => f.kind === FrameKind.Zero).reduce((n, f) => n + f.length, 0),
  };
  const payload = Buffer.from(JSON.stringify(trailer));
  out.push(sealFrame(chain, frames.length, { kind: FrameKind.End, length: payload.length, payload, data: payload }));
  return out;
}

/** Where a zstd frame's Frame_Content_Size field lies (RFC 8878, 3.1.1.1), and how many bytes it has. */
export function contentSizeField(zstd: Buffer): { at: number; bytes: number } {
  const descriptor = zstd[4]!;
  const singleSegment = (descriptor >> 5) & 1;
  const dictionaryBytes = [0, 1, 2, 4][descriptor & 3]!;
  return { at: 5 + (singleSegment ? 0 : 1) + dictionaryBytes, bytes: [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6]! };
}

/** A zstd frame whose header announces `announced` bytes (same field width) but whose blocks are those of `data`. */
export function lyingZstd(data: Buffer, announced: number): Buffer {
  const z = Buffer.from(compress(data, { compressionLevel: 1 }));
  const { at, bytes } = contentSizeField(z);
  if (bytes === 4) z.writeUInt32LE(announced, at);
  else if (bytes === 8) z.writeBigUInt64LE(BigInt(announced), at);
  else if (bytes === 2) z.writeUInt16LE(announced - 256, at);
  else throw new Error(`test: cannot rewrite a ${bytes}-byte content size`);
  return z;
}

/** The same zstd frame with its Frame_Content_Size field removed: it announces no size. */
export function withoutContentSize(zstd: Buffer): Buffer {
  const { at, bytes } = contentSizeField(zstd);
  const descriptor = zstd[4]!;
  if (descriptor & 0x20) throw new Error('test: a single-segment frame always says its size');
  const out = Buffer.concat([zstd.subarray(0, at), zstd.subarray(at + bytes)]);
  out[4] = descriptor & 0x3f;
  return out;
}

/** A skippable zstd frame (RFC 8878, 3.1.2) carrying `content`. */
export function skippableFrame(content: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50, 0);
  h.writeUInt32LE(content.length, 4);
  return Buffer.concat([h, content]);
}
