/**
 * Writes a delta stream (docs/delta-stream.md). The encoder hands back buffers rather than
 * writing them, so the caller's transport (an HTTPS request body) applies its own back-pressure.
 * Data is compressed with zstd and sent raw when compression does not pay.
 */
import { crc32 } from 'node:zlib';
import { compress } from 'zstd-napi';
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

/** Zero frames carry no payload; their length field is 32 bits, so long zero runs are split. */
const MAX_ZERO_RUN = 0x8000_0000;

export interface EncoderOptions {
  /** zstd level; 0 turns compression off. Level 1 keeps up with a disk on one core. */
  compressionLevel?: number;
}

export class DeltaStreamEncoder {
  private seq = 0;
  private chain = 0;
  private readonly trailer: StreamTrailer = { frames: 0, dataBytes: 0, zeroBytes: 0 };
  private readonly level: number;
  /**
   * Frames to send raw before trying zstd again. Incompressible data (encrypted volumes, media,
   * already-compressed files) costs zstd its full effort for no gain, so after each frame that
   * did not shrink the encoder waits twice as long (up to 32 frames) before it tries again.
   */
  private skip = 0;
  private skipNext = 1;
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
      let payload = piece;
      let codec = Codec.Raw;
      if (this.level > 0 && this.skip > 0) this.skip -= 1;
      else if (this.level > 0) {
        const packed = compress(piece, { compressionLevel: this.level });
        // Less than 3% saved is not worth the receiver's decompression either.
        if (packed.length < piece.length * 0.97) {
          payload = packed;
          codec = Codec.Zstd;
          this.skipNext = 1;
        } else {
          this.skip = this.skipNext;
          this.skipNext = Math.min(32, this.skipNext * 2);
        }
      }
      out.push(this.frame(FrameKind.Data, codec, disk, offset + at, piece.length, crc32(piece), payload), payload);
      this.trailer.dataBytes += piece.length;
    }
    return out;
  }

  zero(disk: number, offset: number, length: number): Buffer[] {
    const out: Buffer[] = [];
    for (let at = 0; at < length; at += MAX_ZERO_RUN) {
      const run = Math.min(MAX_ZERO_RUN, length - at);
      out.push(this.frame(FrameKind.Zero, Codec.Raw, disk, offset + at, run, 0, Buffer.alloc(0)));
      this.trailer.zeroBytes += run;
    }
    return out;
  }

  end(): Buffer[] {
    const trailer: StreamTrailer = { ...this.trailer, frames: this.seq + 1 };
    const payload = Buffer.from(JSON.stringify(trailer), 'utf8');
    return [this.frame(FrameKind.End, Codec.Raw, 0, 0, payload.length, crc32(payload), payload), payload];
  }

  private frame(kind: FrameKind, codec: Codec, disk: number, offset: number, length: number, dataCrc: number, payload: Buffer): Buffer {
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
    h.writeUInt32BE(crc32(payload, crc32(h.subarray(0, 36), this.chain)), 36);
    this.seq += 1;
    this.trailer.frames = this.seq;
    this.wireBytes += h.length + payload.length;
    return h;
  }
}
