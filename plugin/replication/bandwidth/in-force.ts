/**
 * Which bandwidth limit holds a protection's cycles now, and why: what `vmdr status` (and the
 * API's status) shows an operator asking why a VM lags. The schedules are found as the sender's
 * pacer finds them (`schedulesOf`, used by gate.ts) and read with the same `limitAt`; the tighter
 * of the protection's own and its DR site link's wins, as the pacer's `limit()` answers.
 *
 * Read on this host's clock: the sender reads the sending host's, so a status taken on a host in
 * another time zone than the source's would name another window.
 */
import type { Config, Protection } from '../../config/schema.js';
import { limitAt, nextLimitChange, type BandwidthSchedule, type Rate } from '../../config/bandwidth.js';

/** The two schedules a protection's cycles are held to, looked up in `config` at each call (a reload changes them in place). */
export function schedulesOf(config: Config, protection: Protection): { own: () => BandwidthSchedule | undefined; link: () => BandwidthSchedule | undefined } {
  const { name } = protection;
  const site = protection.target.site;
  return {
    own: () => config.protections.find((p) => p.name === name)?.bandwidth,
    link: () => config.sites.find((s) => s.name === site)?.bandwidth,
  };
}

/** Whose limit holds: the protection's own `bandwidth` or its DR site link's; null when neither limits. */
export type LimitSource = 'protection' | 'site-link';

export interface LimitInForce {
  /** Bytes per second; null: unlimited (JSON has no Infinity). */
  limit: number | null;
  /** The protection's own on a tie. */
  source: LimitSource | null;
}

export interface BandwidthInForce extends LimitInForce {
  /** The DR site whose link is meant by `site-link`. */
  site: string;
  /** When the limit in force next changes (a window of either opens or closes) and what holds from then; null: it never does. */
  next: (LimitInForce & { at: string }) | null;
}

function inForceAt(own: BandwidthSchedule | undefined, link: BandwidthSchedule | undefined, at: Date): LimitInForce {
  const [mine, links] = [limitAt(own, at), limitAt(link, at)];
  const limit: Rate = Math.min(mine, links);
  if (!Number.isFinite(limit)) return { limit: null, source: null };
  return { limit, source: mine <= links ? 'protection' : 'site-link' };
}

export function bandwidthInForce(config: Config, protection: Protection, at = new Date()): BandwidthInForce {
  const schedules = schedulesOf(config, protection);
  const [own, link] = [schedules.own(), schedules.link()];
  const change = nextLimitChange([own, link], at);
  return {
    ...inForceAt(own, link, at),
    site: protection.target.site,
    next: change ? { at: change.at.toISOString(), ...inForceAt(own, link, change.at) } : null,
  };
}

/**
 * bandwidthInForce for every protection of one status call (protections of `config`), at one
 * instant. Protections held to the same schedules share one answer (most have no limit of their own
 * and differ only in their DR site), so a link's week of window edges is walked once per call, not
 * once per protection: 500 protections on one scheduled link took 8-11 ms a call walked each, under
 * 0.2 ms shared. Rows share the answer: read only.
 */
export function bandwidthsInForce(config: Config, at = new Date()): (protection: Protection) => BandwidthInForce {
  const answers = new Map<string, BandwidthInForce>();
  return (protection) => {
    // `protection` is one of config.protections: its own schedule is the one schedulesOf finds.
    const key = JSON.stringify([protection.target.site, protection.bandwidth ?? null]);
    let answer = answers.get(key);
    if (!answer) answers.set(key, (answer = bandwidthInForce(config, protection, at)));
    return answer;
  };
}
