/**
 * What a receiver accepts from a paired sender: how many cycles at once, how long a
 * cycle may take, and what a stream header may declare. Everything here is checked before a
 * replica is touched, so a refused header creates nothing on disk and starts no qemu-nbd.
 */
import type { RecoveryPoint } from '../replica/store.js';
import type { StreamHeader } from '../stream/format.js';
import { ReceiverRefused } from './errors.js';

const MiB = 1024 * 1024;
const TiB = 1024 * 1024 * MiB;

export interface ReceiverLimits {
  /** Connections open at once; the kernel refuses more. Senders keep up to 4 each. */
  maxConnections: number;
  /** From a connection's start to the end of its TLS handshake, and again to the end of a request's headers. */
  headersTimeoutMs: number;
  /**
   * Cycles and hash requests being served or waiting for their turn, all protections together;
   * more answer 503. Each may hold about 32 MiB (docs/replication.md): this bounds the memory.
   */
  maxCycles: number;
  /** Disks of the first stream of an empty replica (nothing else says how many the VM has). */
  maxDisks: number;
  /** Disks a stream may add to those of the replica's newest point (disks hot-added to the VM). */
  newDisks: number;
  /** The largest disk a stream may declare. */
  maxDiskBytes: number;
  /** How far ahead of this host's clock a stream's createdAt may be. */
  clockSkewMs: number;
  /**
   * The slowest a sender may be: a cycle whose sender keeps the receiver waiting longer than
   * declared size / minRate (but never less than minCycleMs) fails, and its turn goes to the next.
   */
  minRateBytesPerSecond: number;
  minCycleMs: number;
}

export const DEFAULT_LIMITS: ReceiverLimits = {
  maxConnections: 256,
  headersTimeoutMs: 10_000,
  maxCycles: 16,
  maxDisks: 32,
  newDisks: 4,
  maxDiskBytes: 64 * TiB,
  clockSkewMs: 10 * 60_000,
  minRateBytesPerSecond: 1 * MiB,
  minCycleMs: 3 * 60_000,
};

/** How long a cycle may keep the receiver waiting for its bytes, from what its header declares. */
export function cycleBudgetMs(header: StreamHeader, limits: ReceiverLimits): number {
  // Every disk in full is the most a stream can carry (zero frames carry no payload): an upper bound.
  const declared = header.disks.reduce((sum, d) => sum + d.sizeBytes, 0);
  return Math.max(limits.minCycleMs, Math.ceil((declared / limits.minRateBytesPerSecond) * 1000));
}

/**
 * Refuses a header whose protection, disks or time this replica cannot take: `newest` is the
 * replica's newest point (the disks the protection has), `now` this host's clock. What any header
 * must be (distinct disk names of the name rule, an ISO createdAt) the decoder has checked.
 */
/**
 * How far the sender's clock is behind this host's (negative: ahead), from what it said it read as
 * it sent (`x-vmdr-clock`): added to a stream's createdAt, it puts the point's time on this host's
 * clock, the one `--at`, lags and data-loss windows are read on. Within 2 s it is taken as 0 (that
 * much is the network and NTP, not a skew), and beyond the skew limit the sender's clock is not
 * believed either: createdAt stays as sent, and a stream that far ahead is refused below.
 */
export function senderClockOffsetMs(said: string | string[] | undefined, limits: ReceiverLimits, now = Date.now()): number {
  const reading = typeof said === 'string' ? Date.parse(said) : NaN;
  if (Number.isNaN(reading)) return 0;
  const offset = now - reading;
  return Math.abs(offset) <= 2_000 || Math.abs(offset) > limits.clockSkewMs ? 0 : offset;
}

export function checkStreamHeader(header: StreamHeader, protection: string, newest: RecoveryPoint | undefined, limits: ReceiverLimits, now = Date.now(), offsetMs = 0): void {
  const refuse = (code: string, message: string, status = 422) => {
    throw new ReceiverRefused(code, `stream header refused: ${message}`, status, { protection });
  };
  if (header.protection !== protection) refuse('STREAM_BAD_HEADER', `the stream is for protection "${header.protection}", sent to "${protection}"`, 400);
  for (const d of header.disks) {
    if (d.sizeBytes === 0 || d.sizeBytes % 512 !== 0) refuse('STREAM_DISK_SIZE_INVALID', `disk ${d.name} of ${d.sizeBytes} bytes is not a whole number of 512-byte sectors`);
    if (d.sizeBytes > limits.maxDiskBytes) refuse('STREAM_DISK_SIZE_INVALID', `disk ${d.name} of ${d.sizeBytes} bytes is larger than the receiver takes (${limits.maxDiskBytes})`);
  }
  const allowed = newest ? Math.min(limits.maxDisks, newest.disks.length + limits.newDisks) : limits.maxDisks;
  if (header.disks.length > allowed) {
    const why = newest ? `its replica has ${newest.disks.length} and a cycle may add ${limits.newDisks}` : `the receiver takes at most ${limits.maxDisks}`;
    refuse('STREAM_TOO_MANY_DISKS', `${header.disks.length} disks; ${why}`);
  }
  const created = Date.parse(header.createdAt);
  if (created > now + limits.clockSkewMs) {
    refuse('STREAM_TIME_INVALID', `createdAt ${header.createdAt} is more than ${limits.clockSkewMs / 60_000} min ahead of the receiver's clock (${new Date(now).toISOString()}): is the source host's clock right?`);
  }
  const base = header.base === null ? undefined : newest?.id === header.base ? newest : undefined;
  if (base && created + offsetMs < base.time.getTime()) {
    const said = offsetMs ? ` (${new Date(created + offsetMs).toISOString()} on the receiver's clock)` : '';
    refuse('STREAM_TIME_INVALID', `createdAt ${header.createdAt}${said} is before its base point ${base.id} (${base.time.toISOString()})`);
  }
}
