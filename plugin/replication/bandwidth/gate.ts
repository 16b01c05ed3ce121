/**
 * Where a cycle's bytes meet the bandwidth limits: between the delta stream's generator and the
 * request body that writes to the socket. The body pulls; each chunk goes on only once the
 * protection's bucket and its DR site link's bucket let it, so the stream (and the NBD reads
 * behind it) runs at the limit and nothing of the cycle piles up in memory. Chunks are split by
 * subarray, never copied: the stream's zero-copy framing stays so.
 *
 * A link's bucket is one per sending process and DR site, shared by every protection shipping
 * there; it reads the schedule of the config last loaded, so a reloaded config acts at once.
 */
import type { Config, Protection } from '../../config/schema.js';
import { realClock, take, TokenBucket, type Clock } from './limiter.js';
import { limitAt, type BandwidthSchedule, type Rate } from './schedule.js';

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
  /** The limit in force now for this protection (the tighter of its own and its link's), bytes/s; Infinity: none. */
  limit(): Rate;
  /** `body` let out no faster than the limits in force. */
  pace(body: AsyncIterable<Buffer>, signal?: AbortSignal): AsyncGenerator<Buffer>;
}

export function pacer(buckets: TokenBucket[], clock: Clock = realClock): Pacer {
  const limit = () => Math.min(Infinity, ...buckets.map((b) => b.rate()));
  return {
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

const links = new Map<string, { schedule: BandwidthSchedule | undefined; bucket: TokenBucket }>();

/** The shared bucket of the link to DR site `site`, reading `schedule` from now on. */
function linkBucket(site: string, schedule: BandwidthSchedule | undefined): TokenBucket {
  let link = links.get(site);
  if (!link) {
    const made: { schedule: BandwidthSchedule | undefined; bucket?: TokenBucket } = { schedule };
    made.bucket = new TokenBucket((now) => limitAt(made.schedule, new Date(now)));
    link = made as { schedule: BandwidthSchedule | undefined; bucket: TokenBucket };
    links.set(site, link);
  }
  link.schedule = schedule;
  return link.bucket;
}

/** The pacer of `protection`'s cycles, or none when neither it nor its DR site link has a limit. */
export function pacerFor(config: Config, protection: Protection): Pacer | undefined {
  const site = config.sites.find((s) => s.name === protection.target.site);
  if (!protection.bandwidth && !site?.bandwidth) return undefined;
  const own = protection.bandwidth;
  return pacer([new TokenBucket((now) => limitAt(own, new Date(now))), linkBucket(protection.target.site, site?.bandwidth)]);
}
