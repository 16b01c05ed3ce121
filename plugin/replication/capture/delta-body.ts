/**
 * The body of one cycle's delta stream: the header, then each disk's ops read over NBD and packed
 * (CRC, zstd; on worker threads for a large cycle), several of each in flight, and framed in
 * order, then the end frame. A generator, so the HTTPS request that carries it pulls buffers at the network's pace and
 * at most a few frames are ever in memory.
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
/** Ops read or packed at once per disk: enough to hide a round trip and keep the pack workers busy, few enough to bound memory (32 MiB). */
const READ_WINDOW = 8;

export async function* deltaStreamBody(
  encoder: DeltaStreamEncoder,
  disks: DiskToShip[],
  /** After each op: its length, and whether it was planned as a zero range (an allocated range read as zeroes is data: it was read). */
  onBytes?: (bytes: number, zero: boolean) => void,
  signal?: AbortSignal,
  /** Called once every read has returned: the source's export is no longer needed. */
  onAllRead?: () => void,
): AsyncGenerator<Buffer> {
  yield encoder.start();
  for (const disk of disks) {
    const fetch = async (op: ShipOp) => {
      if (op.kind === 'zero') return undefined;
      const data = await disk.client.read(op.offset, op.length);
      // Allocated but all zeroes (a guest that zeroed a file, a preallocated image): a zero frame.
      return data.equals(ZEROES.subarray(0, data.length)) ? undefined : encoder.pack(data);
    };
    for await (const [op, packed] of readAhead(disk.ops, fetch, READ_WINDOW)) {
      signal?.throwIfAborted();
      if (!packed) yield* encoder.zero(disk.index, op.offset, op.length);
      else yield* encoder.packedData(disk.index, op.offset, packed);
      onBytes?.(op.length, op.kind === 'zero');
    }
  }
  onAllRead?.();
  yield* encoder.end();
}
