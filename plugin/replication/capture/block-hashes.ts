/**
 * Block hashes of a whole disk, read over NBD: how a resync finds what differs between a source
 * disk and its replica when no dirty bitmap can be trusted (host crash, VM was off, checkpoint
 * gone). Both sides run this same code, the source on its backup export, the DR host on the
 * replica's newest point, so a block hashes equal exactly when its bytes are equal.
 */
import { createHash } from 'node:crypto';
import { STATE_ZERO, type NbdClient } from '../nbd/client.js';
import { ALLOCATION_CONTEXT, MAX_READ } from './extents.js';
import { readAhead } from './read-ahead.js';

/** The bitmap granularity QEMU uses by default: resync ships changed blocks plus at most one granule. */
export const HASH_BLOCK = 64 * 1024;
export const HASH_BYTES = 32;

function hash(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

const zeroHashes = new Map<number, Buffer>();
function zeroHash(length: number): Buffer {
  let h = zeroHashes.get(length);
  if (!h) zeroHashes.set(length, (h = hash(Buffer.alloc(length))));
  return h;
}

/** SHA-256 of every `blockSize` block of the export (the last one may be short), concatenated. */
export async function blockHashes(client: NbdClient, blockSize = HASH_BLOCK, signal?: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of blockHashStream(client, blockSize, signal)) parts.push(part);
  return Buffer.concat(parts);
}

/** How long hashing may hold the event loop before it lets other work run (a server's other requests). */
const SLICE_MS = 10;

/**
 * The same hashes in order, a few MiB of disk at a time: a server answers with them as they come,
 * so its memory holds one part, not the whole answer (32 bytes per block of a disk of any size).
 */
export async function* blockHashStream(client: NbdClient, blockSize = HASH_BLOCK, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const zero = client.hasMetaContext(ALLOCATION_CONTEXT)
    ? (await client.extents(ALLOCATION_CONTEXT)).filter((e) => e.flags & STATE_ZERO)
    : [];
  const chunk = Math.max(blockSize, Math.floor(MAX_READ / blockSize) * blockSize);
  function* chunks() {
    let z = 0;
    for (let offset = 0; offset < client.size; offset += chunk) {
      const length = Math.min(chunk, client.size - offset);
      while (z < zero.length && zero[z]!.offset + zero[z]!.length <= offset) z += 1;
      const e = zero[z];
      yield { offset, length, zero: !!e && e.offset <= offset && e.offset + e.length >= offset + length };
    }
  }
  // A whole chunk of zeroes hashes the same every time: made once, copied for each such chunk.
  const zeroChunk = Buffer.concat(Array.from({ length: chunk / blockSize }, () => zeroHash(blockSize)));
  const read = (c: { offset: number; length: number; zero: boolean }) => (c.zero ? Promise.resolve(undefined) : client.read(c.offset, c.length));
  let slice = Date.now();
  for await (const [c, data] of readAhead(chunks(), read, 8)) {
    signal?.throwIfAborted();
    const blocks = Math.ceil(c.length / blockSize);
    if (!data && c.length === chunk) {
      yield Buffer.from(zeroChunk);
    } else {
      const out = Buffer.allocUnsafe(blocks * HASH_BYTES);
      for (let b = 0; b < blocks; b += 1) {
        const at = b * blockSize;
        const length = Math.min(blockSize, c.length - at);
        (data ? hash(data.subarray(at, at + length)) : zeroHash(length)).copy(out, b * HASH_BYTES);
      }
      yield out;
    }
    // Zero chunks resolve at once: without this a sparse disk would be hashed in one event-loop turn.
    if (Date.now() - slice >= SLICE_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      slice = Date.now();
    }
  }
}

/** The byte ranges whose blocks differ (or exist on one side only), adjacent blocks merged. */
export function differingRanges(source: Buffer, replica: Buffer, size: number, blockSize = HASH_BLOCK): { offset: number; length: number }[] {
  const ranges: { offset: number; length: number }[] = [];
  const blocks = Math.ceil(size / blockSize);
  for (let b = 0; b < blocks; b += 1) {
    const at = b * HASH_BYTES;
    const same = at + HASH_BYTES <= replica.length && source.subarray(at, at + HASH_BYTES).equals(replica.subarray(at, at + HASH_BYTES));
    if (same) continue;
    const offset = b * blockSize;
    const length = Math.min(blockSize, size - offset);
    const last = ranges[ranges.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else ranges.push({ offset, length });
  }
  return ranges;
}
