/**
 * The data path of a failback: make one disk equal to another, writing only the blocks that
 * differ. Both are NBD exports (the running DR VM's backup export, or its images; the source's
 * disk image under qemu-nbd), compared by the SHA-256 of every 64 KiB block, the same hashes a
 * replication resync uses. What the source still holds is not sent back over the wire.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { NbdListen } from '../../hypervisors/types.js';
import { blockHashes, differingRanges } from '../replication/capture/block-hashes.js';
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
  signal?: AbortSignal,
): Promise<CopyResult> {
  const source = await NbdClient.connect(from.listen, { exportName: from.exportName, signal });
  try {
    const target = await NbdClient.connect(to.listen, { exportName: to.exportName, signal });
    try {
      if (target.size < source.size) {
        throw new VmdrError('DISK_TOO_SMALL', `disk ${what.disk} to copy back is ${target.size} bytes, smaller than the ${source.size} bytes it must hold`, {
          subject: { disk: what.disk },
        });
      }
      const [a, b] = await Promise.all([blockHashes(source, undefined, signal), blockHashes(target, undefined, signal)]);
      const chunks = differingRanges(a, b, source.size).flatMap((r) => {
        const out: { offset: number; length: number }[] = [];
        for (let at = r.offset; at < r.offset + r.length; at += MAX_READ) out.push({ offset: at, length: Math.min(MAX_READ, r.offset + r.length - at) });
        return out;
      });
      let copied = 0;
      const worker = async () => {
        for (let c = chunks.shift(); c; c = chunks.shift()) {
          signal?.throwIfAborted();
          await target.write(c.offset, await source.read(c.offset, c.length));
          copied += c.length;
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
      await target.flush();
      return { bytesCompared: source.size, bytesCopied: copied };
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}
