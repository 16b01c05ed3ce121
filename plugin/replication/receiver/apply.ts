/**
 * Applies one delta stream to a protection's replica: a new overlay per disk on top of the newest
 * recovery point, frames written into it over NBD (qemu-nbd) as they arrive, a flush, and only
 * then the commit that makes it a recovery point. Whatever fails before the commit (a refused
 * frame, a cut connection, a full disk) discards the overlays: the replica stays at its last
 * committed point and the sender repeats the cycle from the same checkpoint.
 */
import { NbdClient } from '../nbd/client.js';
import type { DecodedStream } from '../stream/decode.js';
import { failpoint } from '../replica/failpoints.js';
import { serveImage } from '../replica/qemu-nbd.js';
import type { RecoveryPoint, ReplicaStore } from '../replica/store.js';
import { ReceiverRefused, STREAM_BASE_MISMATCH } from './errors.js';
import { writeFrames } from './write-frames.js';


export interface ApplyResult {
  point: RecoveryPoint;
  wireBytes: number;
}

/** `stream` is decoded and its header checked (limits.ts); frames are read from here on. */
export async function applyDeltaStream(
  replicas: ReplicaStore,
  protection: string,
  { header, frames }: DecodedStream,
  onWireBytes: () => number,
  /** senderClockOffsetMs: the point's time is on this host's clock. */
  clockOffsetMs = 0,
): Promise<ApplyResult> {
  const newest = replicas.latestPoint(protection);
  if ((newest?.id ?? null) !== header.base) {
    throw new ReceiverRefused(
      STREAM_BASE_MISMATCH,
      `stream applies on ${header.base ?? 'an empty replica'}, but the newest recovery point of "${protection}" is ${newest?.id ?? 'none'}`,
      409,
      { protection, point: header.base ?? undefined },
    );
  }
  // The overlays are made, and each disk's qemu-nbd started, while the first frames are read and
  // decoded: on a small cycle that preparation would otherwise follow the sender's last byte.
  const preparing = replicas.beginPoint(protection, header.disks);
  preparing.catch(() => undefined);
  const servers: Awaited<ReturnType<typeof serveImage>>[] = [];
  const clients: NbdClient[] = [];
  // A disk's qemu-nbd starts with its first frame: a disk the cycle did not touch costs no process.
  const opening = new Map<number, Promise<NbdClient>>();
  const clientOf = (disk: number) => {
    let client = opening.get(disk);
    if (!client) {
      client = (async () => {
        const server = await serveImage((await preparing).overlays[disk]!.image);
        servers.push(server);
        const c = await NbdClient.connect(server.listen, { exportName: '' });
        clients.push(c);
        return c;
      })();
      opening.set(disk, client);
    }
    return client;
  };
  try {
    const end = await writeFrames(frames, clientOf);
    // decodeDeltaStream yields the end frame only after checking it; without it nothing commits.
    if (!end) throw new Error('delta stream ended without an end frame');
    const pending = await preparing;
    await Promise.all(clients.map((c) => c.flush()));
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
    failpoint('receiver-before-commit');
    const point = await pending.commit({
      time: new Date(Date.parse(header.createdAt) + clockOffsetMs),
      checkpoint: header.checkpoint,
      since: header.since,
      kind: header.kind,
      bytesShipped: onWireBytes(),
      dataBytes: end.trailer.dataBytes,
      zeroBytes: end.trailer.zeroBytes,
      consistency: {
        consistency: header.consistency ?? 'crash',
        consistencyIssue: header.consistencyIssue ?? null,
        freezeWindowMs: header.freezeWindowMs ?? null,
        groupInstant: header.groupInstant ?? null,
      },
    });
    failpoint('receiver-after-commit');
    return { point, wireBytes: onWireBytes() };
  } catch (err) {
    // A connection still opening when a frame failed is waited for, so it is closed here too.
    await Promise.allSettled(opening.values());
    for (const c of clients) c.destroy();
    await Promise.allSettled(servers.map((s) => s.stop()));
    const pending = await preparing.catch(() => undefined);
    await pending?.discard();
    throw err;
  }
}
