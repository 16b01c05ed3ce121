/**
 * The data path of a failback: make one disk equal to another, writing only the blocks that
 * differ. Both are NBD exports (the running DR VM's backup export, or its images; the source's
 * disk image under qemu-nbd), compared by the SHA-256 of every 64 KiB block, the same hashes a
 * replication resync uses. What the source still holds is not sent back over the wire.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { NbdListen, TaskOptions } from '../../hypervisors/types.js';
import { blockHashes, blockHashStream, differingRanges, HASH_BLOCK, HASH_BYTES } from '../replication/capture/block-hashes.js';
import { MAX_READ } from '../replication/capture/extents.js';
import { NbdClient } from '../replication/nbd/client.js';

export interface CopyResult {
  bytesCompared: number;
  bytesCopied: number;
}

const IN_FLIGHT = 8;

export async function copyDifferences(
  from: { listen: NbdListen; exportName: string },
  to: { listen: NbdListen; exportName: string },
  what: { disk: string },
  task: TaskOptions = {},
): Promise<CopyResult> {
  const { signal } = task;
  const subject = { disk: what.disk };
  const report = (phase: 'compare' | 'copy', done: number, total: number) => task.onProgress?.({ phase, unit: 'bytes', done, total, subject });
  const source = await NbdClient.connect(from.listen, { exportName: from.exportName, signal });
  try {
    const target = await NbdClient.connect(to.listen, { exportName: to.exportName, signal });
    try {
      if (target.size < source.size) {
        throw new VmdrError('DISK_TOO_SMALL', `disk ${what.disk} to copy back is ${target.size} bytes, smaller than the ${source.size} bytes it must hold`, {
          subject: { disk: what.disk },
        });
      }
      const [a, b] = await Promise.all([hashesCounted(source, (n) => report('compare', n, source.size), signal), blockHashes(target, undefined, signal)]);
      report('compare', source.size, source.size);
      const chunks = differingRanges(a, b, source.size).flatMap((r) => {
        const out: { offset: number; length: number }[] = [];
        for (let at = r.offset; at < r.offset + r.length; at += MAX_READ) out.push({ offset: at, length: Math.min(MAX_READ, r.offset + r.length - at) });
        return out;
      });
      const toCopy = chunks.reduce((sum, c) => sum + c.length, 0);
      let copied = 0;
      report('copy', 0, toCopy);
      const worker = async () => {
        for (let c = chunks.shift(); c; c = chunks.shift()) {
          signal?.throwIfAborted();
          await target.write(c.offset, await source.read(c.offset, c.length));
          copied += c.length;
          report('copy', copied, toCopy);
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
      await target.flush();
      // Over only once flushed: the bytes are on the source's disk.
      report('copy', toCopy, toCopy);
      return { bytesCompared: source.size, bytesCopied: copied };
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

/** The block hashes of `client`, saying how many of its bytes are hashed as they come. */
async function hashesCounted(client: NbdClient, onBytes: (bytes: number) => void, signal?: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = [];
  let hashed = 0;
  for await (const part of blockHashStream(client, HASH_BLOCK, signal)) {
    parts.push(part);
    hashed = Math.min(client.size, hashed + (part.length / HASH_BYTES) * HASH_BLOCK);
    onBytes(hashed);
  }
  return Buffer.concat(parts);
}
