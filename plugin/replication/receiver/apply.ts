/**
 * Applies one delta stream to a protection's replica: a new overlay per disk on top of the newest
 * recovery point, frames written into it over NBD (qemu-nbd) as they arrive, a flush, and only
 * then the commit that makes it a recovery point. Whatever fails before the commit (a refused
 * frame, a cut connection, a full disk) discards the overlays: the replica stays at its last
 * committed point and the sender repeats the cycle from the same checkpoint.
 */
import { NbdClient } from '../nbd/client.js';
import { decodeDeltaStream } from '../stream/decode.js';
import { FrameKind } from '../stream/format.js';
import { failpoint } from '../replica/failpoints.js';
import { serveImage } from '../replica/qemu-nbd.js';
import type { RecoveryPoint, ReplicaStore } from '../replica/store.js';
import { ReceiverRefused, STREAM_BASE_MISMATCH } from './errors.js';

/** NBD writes in flight per cycle: keeps qemu-nbd busy without buffering much of the stream. */
const WRITE_WINDOW = 16;

export interface ApplyResult {
  point: RecoveryPoint;
  wireBytes: number;
}

export async function applyDeltaStream(
  replicas: ReplicaStore,
  protection: string,
  body: AsyncIterable<Buffer | Uint8Array | string>,
  onWireBytes: () => number,
): Promise<ApplyResult> {
  const { header, frames } = await decodeDeltaStream(body);
  if (header.protection !== protection) {
    throw new ReceiverRefused('STREAM_BAD_HEADER', `stream is for protection "${header.protection}", sent to "${protection}"`, 400, { protection });
  }
  const newest = replicas.latestPoint(protection);
  if ((newest?.id ?? null) !== header.base) {
    throw new ReceiverRefused(
      STREAM_BASE_MISMATCH,
      `stream applies on ${header.base ?? 'an empty replica'}, but the newest recovery point of "${protection}" is ${newest?.id ?? 'none'}`,
      409,
      { protection, point: header.base ?? undefined },
    );
  }
  const pending = await replicas.beginPoint(protection, header.disks);
  const servers: Awaited<ReturnType<typeof serveImage>>[] = [];
  const clients: NbdClient[] = [];
  try {
    for (const overlay of pending.overlays) {
      const server = await serveImage(overlay.image);
      servers.push(server);
      clients.push(await NbdClient.connect(server.listen, { exportName: '' }));
    }
    const inFlight: { disk: number; from: number; to: number; done: Promise<void> }[] = [];
    let end;
    for await (const frame of frames) {
      if (frame.kind === FrameKind.End) {
        end = frame;
        break;
      }
      const from = frame.offset;
      const to = from + (frame.kind === FrameKind.Data ? frame.data.length : frame.length);
      // NBD may complete concurrent requests in any order: a frame overlapping one still in flight
      // waits for it, so overlapping frames land in stream order (the later one wins).
      while (inFlight.some((w) => w.disk === frame.disk && w.from < to && from < w.to)) await inFlight.shift()!.done;
      const client = clients[frame.disk]!;
      const write = frame.kind === FrameKind.Data ? client.write(frame.offset, frame.data) : client.writeZeroes(frame.offset, frame.length);
      // Awaited in order below; until then a failure must not count as an unhandled rejection.
      write.catch(() => undefined);
      inFlight.push({ disk: frame.disk, from, to, done: write });
      failpoint('receiver-frame');
      if (inFlight.length >= WRITE_WINDOW) await inFlight.shift()!.done;
    }
    await Promise.all(inFlight.map((w) => w.done));
    // decodeDeltaStream yields the end frame only after checking it; without it nothing commits.
    if (!end) throw new Error('delta stream ended without an end frame');
    await Promise.all(clients.map((c) => c.flush()));
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
    failpoint('receiver-before-commit');
    const point = await pending.commit({
      time: new Date(header.createdAt),
      checkpoint: header.checkpoint,
      since: header.since,
      kind: header.kind,
      bytesShipped: onWireBytes(),
      dataBytes: end.trailer.dataBytes,
      zeroBytes: end.trailer.zeroBytes,
    });
    failpoint('receiver-after-commit');
    return { point, wireBytes: onWireBytes() };
  } catch (err) {
    for (const c of clients) c.destroy();
    await Promise.allSettled(servers.map((s) => s.stop()));
    await pending.discard();
    throw err;
  }
}
