/**
 * Reusable buffers for the decoder's large frames. A full sync decodes a few hundred frames of
 * 4 MiB; a fresh Buffer for each (the payload gathered from TLS records, the zstd output) made
 * V8 run a full GC every 50–100 ms to account for the external memory: a third of the receiver's
 * CPU. A large data frame's bytes come from here, and whoever is done with them gives them back
 * through the frame's `release()` (the receiver, once its NBD write has completed); a frame never
 * released is garbage like any Buffer.
 */
import { MAX_FRAME_DATA } from './format.js';

/** Room for the largest payload the decoder accepts (zstd may exceed its input a little) and zstd's one-byte probe. */
export const FRAME_BUFFER_BYTES = MAX_FRAME_DATA + 64 * 1024 + 1;
/** Frames smaller than this get their own Buffer: a pooled one would hold 4 MiB for a few KiB. */
export const POOLED_FROM_BYTES = 2 * 1024 * 1024;
/** Buffers kept for reuse, for every stream of the process: at most about 33 MiB held idle. */
const KEPT = 8;

const free: Buffer[] = [];

export function takeFrameBuffer(): Buffer {
  return free.pop() ?? Buffer.allocUnsafeSlow(FRAME_BUFFER_BYTES);
}

/** The caller no longer uses `buffer` nor any view of it. */
export function giveBackFrameBuffer(buffer: Buffer): void {
  if (free.length < KEPT && buffer.length === FRAME_BUFFER_BYTES) free.push(buffer);
}
