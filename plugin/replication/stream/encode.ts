/**
 * Writes a delta stream (docs/delta-stream.md). The encoder hands back buffers rather than
 * writing them, so the caller's transport (an HTTPS request body) applies its own back-pressure.
 * Data is compressed with zstd and sent raw when compression does not pay. A data frame's byte
 * work (CRCs, zstd: pack.ts) runs in the caller's thread (`data`) or on a worker thread
 * (`pack` then `packedData`, several frames at once); the frame headers, their order and the
 * chain stay here.
 */
import { crc32 } from 'node:zlib';
import { crc32Combine } from './crc.js';
import {
  Codec,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  FrameKind,
  MAX_FRAME_DATA,
  STREAM_MAGIC,
  STREAM_PREFIX_BYTES,
  STREAM_VERSION,
  type StreamHeader,
  type StreamTrailer,
} from './format.js';
import { packOffThread } from './pack-pool.js';
import { packData, type Packed } from './pack.js';

/** Zero frames carry no payload; their length field is 32 bits, so long zero runs are split. */
const MAX_ZERO_RUN = 0x8000_0000;
const EMPTY = Buffer.alloc(0);

export interface EncoderOptions {
  /** zstd level (default 1); 0 sends every frame raw (a protection's `compression: off`). */
  compressionLevel?: number;
}

export class DeltaStreamEncoder {
  private seq = 0;
  private chain = 0;
  private readonly trailer: StreamTrailer = { frames: 0, dataBytes: 0, zeroBytes: 0 };
  private readonly level: number;
  /** Bytes of payload put on the wire so far (after compression), headers excluded. */
  wireBytes = 0;

  constructor(
    readonly header: StreamHeader,
    options: EncoderOptions = {},
  ) {
    this.level = options.compressionLevel ?? 1;
  }

  start(): Buffer {
    const json = Buffer.from(JSON.stringify(this.header), 'utf8');
    const out = Buffer.alloc(STREAM_PREFIX_BYTES + json.length + 4);
    STREAM_MAGIC.copy(out, 0);
    out.writeUInt16BE(STREAM_VERSION, 8);
    out.writeUInt16BE(0, 10);
    out.writeUInt32BE(json.length, 12);
    json.copy(out, STREAM_PREFIX_BYTES);
    this.chain = crc32(out.subarray(0, STREAM_PREFIX_BYTES + json.length));
    out.writeUInt32BE(this.chain, STREAM_PREFIX_BYTES + json.length);
    this.wireBytes += out.length;
    return out;
  }

  /** Frames for `data` at `offset` of disk `disk`: header and payload buffers, in order. */
  data(disk: number, offset: number, data: Buffer): Buffer[] {
    const out: Buffer[] = [];
    for (let at = 0; at < data.length; at += MAX_FRAME_DATA) {
      const piece = data.subarray(at, Math.min(at + MAX_FRAME_DATA, data.length));
      out.push(...this.packedData(disk, offset + at, [packData(piece, this.level)]));
    }
    return out;
  }

  /**
   * `data` packed, one Packed per frame, for `packedData` later: several of these may run at once.
   * zstd runs on a worker thread once one is up; without compression only the CRC is left,
   * cheaper here than a trip to a worker. Takes `data` over (its memory may move to the worker).
   */
  async pack(data: Buffer): Promise<Packed[]> {
    const pieces: (Packed | Promise<Packed>)[] = [];
    for (let at = 0; at < data.length; at += MAX_FRAME_DATA) {
      const piece = data.length <= MAX_FRAME_DATA ? data : data.subarray(at, Math.min(at + MAX_FRAME_DATA, data.length));
      pieces.push((this.level !== 0 && packOffThread(piece, this.level)) || packData(piece, this.level));
    }
    return Promise.all(pieces);
  }

  /** The frames of data packed by `pack`, starting at `offset` of disk `disk`, in order. */
  packedData(disk: number, offset: number, packed: Packed[]): Buffer[] {
    const out: Buffer[] = [];
    let at = offset;
    for (const p of packed) {
      out.push(this.frame(FrameKind.Data, p.codec, disk, at, p.length, p.dataCrc, p.payload, p.payloadCrc), p.payload);
      this.trailer.dataBytes += p.length;
      at += p.length;
    }
    return out;
  }

  zero(disk: number, offset: number, length: number): Buffer[] {
    const out: Buffer[] = [];
    for (let at = 0; at < length; at += MAX_ZERO_RUN) {
      const run = Math.min(MAX_ZERO_RUN, length - at);
      out.push(this.frame(FrameKind.Zero, Codec.Raw, disk, offset + at, run, 0, EMPTY, 0));
      this.trailer.zeroBytes += run;
    }
    return out;
  }

  end(): Buffer[] {
    const trailer: StreamTrailer = { ...this.trailer, frames: this.seq + 1 };
    const payload = Buffer.from(JSON.stringify(trailer), 'utf8');
    const crc = crc32(payload);
    return [this.frame(FrameKind.End, Codec.Raw, 0, 0, payload.length, crc, payload, crc), payload];
  }

  /** A frame's header; its CRC joins the header's with the payload's (`payloadCrc`), so the payload is not read again. */
  private frame(kind: FrameKind, codec: Codec, disk: number, offset: number, length: number, dataCrc: number, payload: Buffer, payloadCrc: number): Buffer {
    const h = Buffer.alloc(FRAME_HEADER_BYTES);
    h.writeUInt32BE(FRAME_MAGIC, 0);
    h.writeBigUInt64BE(BigInt(this.seq), 4);
    h.writeUInt8(kind, 12);
    h.writeUInt8(codec, 13);
    h.writeUInt16BE(disk, 14);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    h.writeUInt32BE(payload.length, 28);
    h.writeUInt32BE(dataCrc, 32);
    h.writeUInt32BE(crc32Combine(crc32(h.subarray(0, 36), this.chain), payloadCrc, payload.length), 36);
    this.seq += 1;
    this.trailer.frames = this.seq;
    this.wireBytes += h.length + payload.length;
    return h;
  }
}
