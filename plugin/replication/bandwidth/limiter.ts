/**
 * A token bucket whose rate is read from a schedule at every take, so a window that opens or closes
 * in the middle of a cycle acts at the next chunk (milliseconds), not at the next cycle.
 *
 * Our own, in one file: npm's limiters (limiter, stream-throttle, …) fix the rate when they are
 * made, read the real clock (no fake one for tests), and the stream ones are Transform streams
 * that copy every chunk; this one is two numbers per bucket, nothing is copied (the caller hands
 * out subarrays: gate.ts), and a link's bucket is shared by every protection sending over it.
 *
 * Kept as virtual time rather than a token count: `next` is when the link is free again. A take
 * reserves its slot at once and waits for it; slots go out in the order asked, so protections
 * sharing a link, each asking for one chunk at a time, get turns in rotation: equal shares.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Rate } from '../../config/bandwidth.js';

export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => sleep(ms, undefined, signal ? { signal } : {}),
};

/**
 * Credit an idle bucket may bank: a short burst at the start of a cycle, at most this much of
 * the rate in force (20 MB/s: 2 MB), so a cycle's average stays within a few % of its limit.
 */
const BURST_MS = 100;

export class TokenBucket {
  /** When the bytes reserved so far have all gone out at the rate in force (ms, clock time). */
  private next = -Infinity;

  constructor(
    /** The limit in force at a clock time, bytes per second (Infinity: none). */
    readonly rateAt: (now: number) => Rate,
    private readonly clock: Clock = realClock,
  ) {}

  /** The limit in force now. */
  rate(): Rate {
    return this.rateAt(this.clock.now());
  }

  /** Reserves `bytes` now; answers when they may go (clock time, maybe already past). */
  reserve(bytes: number): number {
    const now = this.clock.now();
    const rate = this.rateAt(now);
    if (!Number.isFinite(rate)) {
      this.next = now;
      return now;
    }
    const start = Math.max(this.next, now - BURST_MS);
    this.next = start + (bytes * 1000) / rate;
    // The slot's bytes go at its start: the socket's own pace spreads them over it.
    return Math.max(start, now);
  }
}

/**
 * Waits until `bytes` may go through every bucket at once (a protection's own and its link's):
 * reserved in all of them together, so the tighter one sets the pace and the other loses nothing.
 */
export async function take(buckets: TokenBucket[], bytes: number, clock: Clock = realClock, signal?: AbortSignal): Promise<void> {
  let at = -Infinity;
  for (const b of buckets) at = Math.max(at, b.reserve(bytes));
  const wait = at - clock.now();
  if (wait > 0) await clock.sleep(wait, signal);
}
