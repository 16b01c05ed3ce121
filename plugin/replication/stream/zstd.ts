/**
 * Decompresses a data frame's zstd payload with a hard bound on what it may produce. The payload
 * comes from the network: its zstd headers say whatever the sender wants (zstd-napi's decompress()
 * trusts them and allocates the sum of every concatenated frame's announced size, 4 GiB from a
 * 131 KB request). Here nothing is allocated from what the payload says: the output buffer is
 * sized from the frame's declared length, which the decoder has already bounded by MAX_FRAME_DATA,
 * and zstd decompresses into it and can write no further.
 */
import { createRequire } from 'node:module';
import type * as Binding from 'zstd-napi/binding.js';
import { StreamError, STREAM_BAD_FRAME } from './errors.js';

// The low-level binding is CommonJS with no ESM entry; its context's calls write into a buffer we own.
const binding = createRequire(import.meta.url)('zstd-napi/binding') as typeof Binding;

const ZSTD_MAGIC = 0xfd2fb528;
/** A 4 MiB window, as large as a frame can be: more would only serve a hostile payload. */
const WINDOW_LOG_MAX = 22;

let context: Binding.DCtx | undefined;

function decompressionContext(): Binding.DCtx {
  if (!context) {
    context = new binding.DCtx();
    context.setParameter(binding.DParameter.windowLogMax, WINDOW_LOG_MAX);
  }
  // A frame refused half way leaves the context mid-frame; every frame starts from a clean one.
  context.reset(binding.ResetDirective.sessionOnly);
  return context;
}

/**
 * The `length` bytes one zstd frame decompresses to. Refused (STREAM_BAD_FRAME naming frame `seq`)
 * when the payload is not exactly one zstd frame (the encoder writes one; a second frame, a
 * skippable frame or trailing bytes have no use but to multiply what a small payload makes the
 * receiver produce), when its header does not announce exactly `length` bytes, or when it
 * decompresses to anything else. At most `length` + 1 bytes are ever allocated, whatever the
 * payload says; none when `into` has room for them.
 */
export function decompressFrame(payload: Buffer, length: number, at: { seq: number; offset: number }, into?: Buffer): Buffer {
  const refuse = (why: string) => new StreamError(STREAM_BAD_FRAME, `frame ${at.seq} ${why}`, at);
  if (payload.length < 4 || payload.readUInt32LE(0) !== ZSTD_MAGIC) throw refuse('is not a zstd frame');
  let announced: number | null;
  let frameBytes: number;
  try {
    announced = binding.getFrameContentSize(payload);
    frameBytes = binding.findFrameCompressedSize(payload);
  } catch (err) {
    throw refuse(`has a malformed zstd frame: ${(err as Error).message}`);
  }
  if (announced !== length) throw refuse(`announces ${announced ?? 'no'} decompressed size, expected ${length}`);
  if (frameBytes !== payload.length) throw refuse(`holds ${payload.length - frameBytes} bytes after its zstd frame (a payload is exactly one zstd frame)`);
  // One byte of room beyond the declared length: a frame that fills it produces more than it said.
  const out = into && into.length > length ? into.subarray(0, length + 1) : Buffer.allocUnsafe(length + 1);
  // One call into a buffer of known size (4-5 times faster than streaming it): zstd writes no
  // further than the buffer and fails when the frame needs more.
  let produced: number;
  try {
    produced = decompressionContext().decompress(out, payload);
  } catch (err) {
    throw refuse(`does not decompress: ${(err as Error).message}`);
  }
  if (produced > length) throw refuse(`decompresses to more than its ${length} bytes`);
  if (produced !== length) throw refuse(`holds ${produced} bytes, announced ${length}`);
  return out.subarray(0, length);
}
