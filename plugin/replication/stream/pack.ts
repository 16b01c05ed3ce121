/**
 * The per-byte work of a data frame, apart from the frame's header: the data's CRC, zstd where it
 * pays, and the payload's CRC. Pure and synchronous, so the same code runs in the encoder's
 * thread (DeltaStreamEncoder.data) and in the pack workers that keep it off the main thread
 * (pack-pool.ts).
 */
import { crc32 } from 'node:zlib';
import { Compressor } from 'zstd-napi';
import { Codec } from './format.js';

export interface Packed {
  codec: Codec;
  /** What travels: the data itself (raw) or one zstd frame of it. */
  payload: Buffer;
  /** Bytes of the disk the frame covers (the uncompressed length). */
  length: number;
  /** CRC-32 of the uncompressed data. */
  dataCrc: number;
  /** CRC-32 of the payload (the data CRC when raw): the frame CRC is combined from it. */
  payloadCrc: number;
}

/** Less than 3% saved is not worth the receiver's decompression either. */
const MIN_SAVING = 0.03;

/** One zstd context per thread and level, reused: a fresh one per frame costs a quarter of the compression. */
const compressors = new Map<number, Compressor>();
function compressorFor(level: number): Compressor {
  let c = compressors.get(level);
  if (!c) {
    c = new Compressor();
    c.setParameters({ compressionLevel: level });
    compressors.set(level, c);
  }
  return c;
}

/** Frames larger than this are probed before zstd gets the whole of them. */
const PROBE_ABOVE = 256 * 1024;
const PROBE_SAMPLES = 4;
const PROBE_SAMPLE_BYTES = 16 * 1024;
const probe = Buffer.allocUnsafe(PROBE_SAMPLES * PROBE_SAMPLE_BYTES);

/**
 * Whether zstd may pay on `data`: four 16 KiB samples spread over it, compressed together, shrink
 * by the minimum saving. Incompressible data (encrypted volumes, media, compressed files) costs
 * zstd its full effort for nothing; the probe costs about 1/64 of that, and, unlike a guess from
 * the frames before, it is right for each frame however many are packed at once.
 */
function worthCompressing(data: Buffer, compressor: Compressor): boolean {
  if (data.length <= PROBE_ABOVE) return true;
  const stride = Math.floor((data.length - PROBE_SAMPLE_BYTES) / (PROBE_SAMPLES - 1));
  for (let i = 0; i < PROBE_SAMPLES; i += 1) data.copy(probe, i * PROBE_SAMPLE_BYTES, i * stride, i * stride + PROBE_SAMPLE_BYTES);
  return compressor.compress(probe).length < probe.length * (1 - MIN_SAVING);
}

/**
 * `data` (at most one frame's worth) packed: zstd at `level` when it saves at least 3%, else raw;
 * level 0 never tries, and a frame whose samples do not compress is not tried either.
 */
export function packData(data: Buffer, level: number): Packed {
  const dataCrc = crc32(data);
  const compressor = level === 0 ? undefined : compressorFor(level);
  if (compressor && worthCompressing(data, compressor)) {
    const packed = compressor.compress(data);
    if (packed.length < data.length * (1 - MIN_SAVING)) {
      return { codec: Codec.Zstd, payload: packed, length: data.length, dataCrc, payloadCrc: crc32(packed) };
    }
  }
  return { codec: Codec.Raw, payload: data, length: data.length, dataCrc, payloadCrc: dataCrc };
}
