/**
 * The DR side of one failback pass on one disk: make the source's disk equal to the DR VM's,
 * sending only the blocks that differ. The DR VM's disk is read through a backup export on this
 * host; the source's hashes come from its site (the SHA-256 of every 64 KiB block, the same hashes
 * a replication resync compares); the blocks whose hashes differ travel back as one framed,
 * checksummed delta stream (docs/delta-stream.md), zero runs as zero frames, which the source site
 * writes and flushes before it answers. What the source still holds is not sent back over the wire.
 */
import { randomUUID } from 'node:crypto';
import type { NbdListen, TaskOptions } from '../../hypervisors/types.js';
import type { Protection } from '../config/schema.js';
import { HASH_BLOCK, HASH_BYTES, blockHashStream, differingRanges } from '../replication/capture/block-hashes.js';
import { deltaStreamBody } from '../replication/capture/delta-body.js';
import { ALLOCATION_CONTEXT, opBytes, planRanges } from '../replication/capture/extents.js';
import { NbdClient } from '../replication/nbd/client.js';
import { failpoint } from '../replication/replica/failpoints.js';
import { DeltaStreamEncoder } from '../replication/stream/encode.js';
import type { FailbackSource } from '../sites/failback-source.js';

/** What one pass did, per disk or summed: the figures a failback report shows. */
export interface CopyResult {
  /** Bytes of the DR disk whose hashes were compared with the source's. */
  bytesCompared: number;
  /** Bytes of the blocks that differed: what the source had to take back. */
  bytesDiffering: number;
  /** Bytes of the delta stream sent to the source site (frames after compression, headers included). */
  bytesSent: number;
}

export async function copyDifferences(
  from: { listen: NbdListen; exportName: string; checkpoint: string },
  source: FailbackSource,
  p: Protection,
  disk: string,
  task: TaskOptions = {},
): Promise<CopyResult> {
  const { signal } = task;
  const report = (phase: 'compare' | 'copy', done: number, total: number) => task.onProgress?.({ phase, unit: 'bytes', done, total, subject: { disk } });
  const client = await NbdClient.connect(from.listen, { exportName: from.exportName, metaContexts: [ALLOCATION_CONTEXT], signal });
  try {
    const [mine, theirs] = await Promise.all([hashesCounted(client, (n) => report('compare', n, client.size), signal), source.hashes(p, disk, client.size, signal)]);
    report('compare', client.size, client.size);
    const ranges = differingRanges(mine, theirs, client.size, HASH_BLOCK);
    const bytesDiffering = ranges.reduce((sum, r) => sum + r.length, 0);
    if (ranges.length === 0) {
      report('copy', 0, 0);
      return { bytesCompared: client.size, bytesDiffering: 0, bytesSent: 0 };
    }
    const encoder = new DeltaStreamEncoder({
      session: randomUUID(),
      protection: p.name,
      checkpoint: from.checkpoint,
      since: null,
      base: null,
      kind: 'resync',
      disks: [{ name: disk, sizeBytes: client.size }],
      createdAt: new Date().toISOString(),
    });
    const ops = planRanges(ranges, await client.extents(ALLOCATION_CONTEXT));
    const toCopy = opBytes(ops, 'data') + opBytes(ops, 'zero');
    let read = 0;
    report('copy', 0, toCopy);
    // Counted as read and sent; done only once the source site said written and flushed.
    const counted = (bytes: number) => report('copy', Math.min((read += bytes), toCopy - 1), toCopy);
    await source.write(p, disk, sending(deltaStreamBody(encoder, [{ index: 0, client, ops }], counted, signal)), signal);
    report('copy', toCopy, toCopy);
    return { bytesCompared: client.size, bytesDiffering, bytesSent: encoder.wireBytes };
  } finally {
    await client.close().catch(() => client.destroy());
  }
}

/** The stream as it leaves: where a crash test kills the DR side in the middle of a pass. */
async function* sending(body: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const part of body) {
    failpoint('failback-sending');
    yield part;
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
