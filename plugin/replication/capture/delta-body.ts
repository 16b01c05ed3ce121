/**
 * The body of one cycle's delta stream: the header, then each disk's ops read over NBD (several
 * reads in flight) and framed, then the end frame. A generator, so the HTTPS request that carries
 * it pulls buffers at the network's pace and at most a few frames are ever in memory.
 */
import type { NbdClient } from '../nbd/client.js';
import type { DeltaStreamEncoder } from '../stream/encode.js';
import { MAX_READ, type ShipOp } from './extents.js';
import { readAhead } from './read-ahead.js';

export interface DiskToShip {
  /** Index of the disk in the stream header. */
  index: number;
  client: NbdClient;
  ops: ShipOp[];
}

const ZEROES = Buffer.alloc(MAX_READ);
/** Reads in flight per disk: enough to hide a round trip, few enough to bound memory (32 MiB). */
const READ_WINDOW = 8;

export async function* deltaStreamBody(
  encoder: DeltaStreamEncoder,
  disks: DiskToShip[],
  onBytes?: (bytes: number) => void,
  signal?: AbortSignal,
  /** Called once every read has returned: the source's export is no longer needed. */
  onAllRead?: () => void,
): AsyncGenerator<Buffer> {
  yield encoder.start();
  for (const disk of disks) {
    const read = (op: ShipOp) => (op.kind === 'data' ? disk.client.read(op.offset, op.length) : Promise.resolve(undefined));
    for await (const [op, data] of readAhead(disk.ops, read, READ_WINDOW)) {
      signal?.throwIfAborted();
      // Allocated but all zeroes (a guest that zeroed a file, a preallocated image): a zero frame.
      if (!data || data.equals(ZEROES.subarray(0, data.length))) yield* encoder.zero(disk.index, op.offset, op.length);
      else yield* encoder.data(disk.index, op.offset, data);
      onBytes?.(op.length);
    }
  }
  onAllRead?.();
  yield* encoder.end();
}
