/**
 * Where a cycle's bytes meet the bandwidth limits: between the delta stream's generator and the
 * request body that writes to the socket. The body pulls; each chunk goes on only once the
 * protection's bucket and its DR site link's bucket let it, so the stream (and the NBD reads
 * behind it) runs at the limit and nothing of the cycle piles up in memory. Chunks are split by
 * subarray, never copied: the stream's zero-copy framing stays so.
 *
 * A link's bucket is one per sending process and DR site, shared by every protection shipping
 * there. Both read their schedules from the live config, so a reloaded one acts within a second.
 */
import type { Config, Protection } from '../../config/schema.js';
import { realClock, take, TokenBucket, type Clock } from './limiter.js';
import { limitAt, type BandwidthSchedule, type Rate } from '../../config/bandwidth.js';
import { schedulesOf } from './in-force.js';

/**
 * A chunk is 20 ms at the loosest limit in force (at most 256 KiB), so that protections sharing a
 * link, served a chunk each in turn, send equal pieces whatever their own limits; and never more
 * than one second at the tightest, so that a window change acts within a second.
 */
const MAX_CHUNK = 256 * 1024;
const MIN_CHUNK = 4096;
const CHUNK_MS = 20;

function chunkSize(rates: number[]): number {
  const finite = rates.filter(Number.isFinite);
  const size = Math.min(MAX_CHUNK, (Math.max(...finite) * CHUNK_MS) / 1000, Math.min(...finite));
  return Math.max(MIN_CHUNK, Math.floor(size));
}

export interface Pacer {
  /** Some limit is configured (in a window or not): a cycle starting now goes through `pace`. */
  configured(): boolean;
  /** The limit in force now for this protection (the tighter of its own and its link's), bytes/s; Infinity: none. */
  limit(): Rate;
  /** `body` let out no faster than the limits in force. */
  pace(body: AsyncIterable<Buffer>, signal?: AbortSignal): AsyncGenerator<Buffer>;
}

export function pacer(buckets: TokenBucket[], clock: Clock = realClock, configured = () => true): Pacer {
  const limit = () => Math.min(Infinity, ...buckets.map((b) => b.rate()));
  return {
    configured,
    limit,
    async *pace(body, signal) {
      for await (const chunk of body) {
        for (let at = 0; at < chunk.length; ) {
          const rates = buckets.map((b) => b.rate());
          if (!rates.some(Number.isFinite)) {
            // Unlimited now: the rest of the chunk at once, but still through the buckets, so a
            // window that closes finds them up to date.
            await take(buckets, chunk.length - at, clock, signal);
            yield at === 0 ? chunk : chunk.subarray(at);
            break;
          }
          const size = Math.min(chunk.length - at, chunkSize(rates));
          await take(buckets, size, clock, signal);
          yield size === chunk.length ? chunk : chunk.subarray(at, at + size);
          at += size;
        }
      }
    },
  };
}

/** How often a bucket looks its schedule up again in the config (a reload changes it in place). */
const LOOKUP_MS = 250;

/**
 * The limit at a clock time from the schedule `lookup` finds, looked up again every LOOKUP_MS:
 * a daemon's reloaded config changes the limit of a cycle in flight.
 */
function scheduled(lookup: () => BandwidthSchedule | undefined): (now: number) => Rate {
  let schedule: BandwidthSchedule | undefined;
  let looked = -Infinity;
  return (now) => {
    if (now - looked >= LOOKUP_MS || now < looked) [schedule, looked] = [lookup(), now];
    return limitAt(schedule, new Date(now));
  };
}

/** The shared buckets of the links to each DR site, in this process. */
const links = new Map<string, TokenBucket>();

/**
 * The pacer of `protection`'s cycles. `config` is the live one (a daemon's, reloaded in place): the
 * protection's and its DR site link's `bandwidth` are read from it as cycles run.
 */
export function pacerFor(config: Config, protection: Protection): Pacer {
  const site = protection.target.site;
  const { own: ownSchedule, link: linkSchedule } = schedulesOf(config, protection);
  let link = links.get(site);
  if (!link) {
    link = new TokenBucket(scheduled(linkSchedule));
    links.set(site, link);
  }
  return pacer([new TokenBucket(scheduled(ownSchedule)), link], realClock, () => linkSchedule() !== undefined || ownSchedule() !== undefined);
}
