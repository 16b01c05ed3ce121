/**
 * Writes a delta stream's frames over NBD as they arrive: several writes in flight, bounded in
 * number and bytes, and a frame overlapping one still in flight waits for it (NBD may complete
 * concurrent requests in any order; the later frame must win). Used by the receiver into a
 * pending overlay and by failback into the source's own image.
 */
import type { NbdClient } from '../nbd/client.js';
import { failpoint } from '../replica/failpoints.js';
import { FrameKind, type EndFrame, type Frame } from '../stream/format.js';

/** NBD writes in flight per stream: keeps qemu-nbd busy without buffering much of the stream. */
const WRITE_WINDOW = 64;
/** And the bytes they may hold: a stream's share of the receiver's memory bound (docs/replication.md). */
export const WRITE_WINDOW_BYTES = 16 * 1024 * 1024;

/**
 * Resolves with the end frame once every write before it has completed, or undefined when the
 * frames ended without one (the decoder yields the end frame only after checking it). Nothing is
 * flushed here: the caller flushes before it calls anything committed.
 */
export async function writeFrames(frames: AsyncIterable<Frame>, clientOf: (disk: number) => Promise<NbdClient>): Promise<EndFrame | undefined> {
  const inFlight: { disk: number; from: number; to: number; bytes: number; done: Promise<void>; release?: () => void }[] = [];
  let bytesInFlight = 0;
  // A frame's buffer goes back to the decoder only once its write has completed (the server has
  // read it all); after a failed write it is left to the garbage collector.
  const settle = async (w: (typeof inFlight)[number]) => {
    await w.done;
    w.release?.();
  };
  const settleOldest = async () => {
    const w = inFlight.shift()!;
    await settle(w);
    bytesInFlight -= w.bytes;
  };
  let end: EndFrame | undefined;
  for await (const frame of frames) {
    if (frame.kind === FrameKind.End) {
      end = frame;
      break;
    }
    const from = frame.offset;
    const to = from + (frame.kind === FrameKind.Data ? frame.data.length : frame.length);
    while (inFlight.some((w) => w.disk === frame.disk && w.from < to && from < w.to)) await settleOldest();
    // Not awaited: while a disk's connection opens, the next frames are read and decoded (within the window).
    const write = clientOf(frame.disk).then((client) =>
      frame.kind === FrameKind.Data ? client.write(frame.offset, frame.data) : client.writeZeroes(frame.offset, frame.length),
    );
    // Awaited in order below; until then a failure must not count as an unhandled rejection.
    write.catch(() => undefined);
    const bytes = frame.kind === FrameKind.Data ? frame.data.length : 0;
    inFlight.push({ disk: frame.disk, from, to, bytes, done: write, ...(frame.kind === FrameKind.Data && frame.release ? { release: frame.release } : {}) });
    bytesInFlight += bytes;
    failpoint('receiver-frame');
    while (inFlight.length >= WRITE_WINDOW || bytesInFlight >= WRITE_WINDOW_BYTES) await settleOldest();
  }
  await Promise.all(inFlight.map(settle));
  return end;
}
