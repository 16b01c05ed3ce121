import { VmdrError } from '../../../hypervisors/errors.js';

/**
 * A delta stream was refused: it is corrupt, truncated, out of order, replayed or not ours.
 * Nothing of a refused stream is committed; the next cycle starts again from the last
 * acknowledged checkpoint.
 */
export class StreamError extends VmdrError {
  constructor(code: string, message: string, subject: { seq?: number; offset?: number } = {}) {
    super(code, `delta stream refused: ${message}`, { subject });
  }
}

export const STREAM_BAD_MAGIC = 'STREAM_BAD_MAGIC';
export const STREAM_VERSION_UNSUPPORTED = 'STREAM_VERSION_UNSUPPORTED';
export const STREAM_BAD_HEADER = 'STREAM_BAD_HEADER';
export const STREAM_CHECKSUM_MISMATCH = 'STREAM_CHECKSUM_MISMATCH';
export const STREAM_OUT_OF_ORDER = 'STREAM_OUT_OF_ORDER';
export const STREAM_BAD_FRAME = 'STREAM_BAD_FRAME';
export const STREAM_TRUNCATED = 'STREAM_TRUNCATED';

/**
 * A thread that packs frames on the source (CRC, zstd) died or failed a frame: the cycle fails and
 * the next one starts again from the same checkpoint, with a new thread.
 */
export class PackWorkerFailed extends VmdrError {
  constructor(detail: string) {
    super('PACK_WORKER_FAILED', `a thread packing the delta stream's frames failed: ${detail}`, { userError: false });
  }
}
