/**
 * The source side of a failback pass, done where the source VM is (its site's daemon, or this
 * process on one host): the block hashes of one of its disks, and a failback stream written into
 * that disk. Both go through the adapter's writer on the disk, which holds the VM off meanwhile.
 *
 * A stream is committed (answered with what it wrote) only after every write of it is flushed.
 * A stream cut or refused mid-way commits nothing, but the writes before the cut are in the image:
 * it then holds a mix of old and new blocks. That is harmless because the source stays off until
 * the final pass is done, and every pass compares hashes again, so the next one sends whatever
 * still differs.
 */
import { VmdrError, type HypervisorAdapter } from '../../hypervisors/types.js';
import type { Protection } from '../config/schema.js';
import { HASH_BLOCK, HASH_BYTES, blockHashes } from '../replication/capture/block-hashes.js';
import { ALLOCATION_CONTEXT } from '../replication/capture/extents.js';
import { NbdClient } from '../replication/nbd/client.js';
import { writeFrames } from '../replication/receiver/write-frames.js';
import type { DecodedStream } from '../replication/stream/decode.js';
import type { StreamHeader } from '../replication/stream/format.js';

/** A failback stream's answer: written and flushed into the source's image. */
export interface FailbackWritten {
  committed: true;
  disk: string;
  /** Bytes of the disk the stream covered (data and zeroes). */
  bytesWritten: number;
}

/** Runs `use` on an NBD client of the writer on `disk` of p's source VM (which must be off), then closes both. */
export async function withSourceDisk<T>(adapter: HypervisorAdapter, p: Protection, disk: string, use: (client: NbdClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const writer = await adapter.openDiskWriter(p.source.vm, disk);
  try {
    const client = await NbdClient.connect(writer.listen, { exportName: writer.exportName, metaContexts: [ALLOCATION_CONTEXT], signal });
    try {
      return await use(client);
    } finally {
      await client.close().catch(() => client.destroy());
    }
  } finally {
    await writer.close();
  }
}

/** The block hashes of the first `sizeBytes` of `disk` of p's source VM (the DR disk's size: no more is compared). */
export function sourceDiskHashes(adapter: HypervisorAdapter, p: Protection, disk: string, sizeBytes: number, signal?: AbortSignal): Promise<Buffer> {
  return withSourceDisk(adapter, p, disk, async (client) => (await blockHashes(client, HASH_BLOCK, signal)).subarray(0, Math.ceil(sizeBytes / HASH_BLOCK) * HASH_BYTES), signal);
}

/**
 * Writes a failback stream into `disk` of p's source VM. The stream comes decoded (decodeDeltaStream:
 * every frame is checked, bounded, as it is read) with its header not yet acted on: it is checked
 * here before the source's image is opened, so garbage touches nothing.
 */
export async function writeFailbackStream(adapter: HypervisorAdapter, p: Protection, disk: string, { header, frames }: DecodedStream): Promise<FailbackWritten> {
  checkFailbackHeader(header, p, disk);
  return withSourceDisk(adapter, p, disk, async (client) => {
    if (header.disks[0]!.sizeBytes > client.size) {
      throw new VmdrError('DISK_TOO_SMALL', `disk ${disk} of source VM "${p.source.vm}" is ${client.size} bytes, smaller than the ${header.disks[0]!.sizeBytes} bytes it must take back`, {
        subject: { protection: p.name, vm: p.source.vm, disk },
      });
    }
    const end = await writeFrames(frames, async () => client);
    if (!end) throw new VmdrError('FAILBACK_STREAM_UNFINISHED', `the failback stream of disk ${disk} ended without its end frame; nothing was committed`, { subject: { protection: p.name, disk } });
    await client.flush();
    return { committed: true, disk, bytesWritten: end.trailer.dataBytes + end.trailer.zeroBytes };
  });
}

/** One protection, one disk: a stream made for another is refused before anything is written. */
function checkFailbackHeader(header: StreamHeader, p: Protection, disk: string): void {
  const named = header.disks.map((d) => d.name);
  if (header.protection !== p.name || header.kind !== 'resync' || named.length !== 1 || named[0] !== disk) {
    throw new VmdrError(
      'FAILBACK_STREAM_MISMATCH',
      `the stream is a ${header.kind} of protection "${header.protection}", disks ${named.join(', ')}; failback of protection "${p.name}" takes one resync stream of disk ${disk}`,
      { subject: { protection: p.name, disk } },
    );
  }
}
