/**
 * A protection's `retention:`. Either the count and age of the newest points (`keep`, `maxAge`,
 * as before tiers existed), or time tiers: every point of the last `all`, then the newest point of
 * each minute for `minutely`, of each hour for `hourly`, of each day for `daily` (each window
 * counted back from now, the longer containing the shorter). Both forms mean what
 * plugin/replication/replica/retention.ts does with them.
 */
import { z } from 'zod';
import { cycleInterval } from './cycle.js';
import { durationBetween } from './duration.js';

export const TIERS = ['all', 'minutely', 'hourly', 'daily'] as const;
export type TierName = (typeof TIERS)[number];

/** The bucket each tier keeps one point of; `all` keeps every point. */
export const TIER_BUCKET_MS: Record<TierName, number> = { all: 0, minutely: 60_000, hourly: 3_600_000, daily: 86_400_000 };

const window = durationBetween('1s', '3650d');

export type Retention = { keep: number; maxAge?: number; tiers?: undefined } | { tiers: Partial<Record<TierName, number>>; keep?: undefined; maxAge?: undefined };

export const RetentionSchema = z
  .strictObject({
    keep: z.number().int().min(1).optional(),
    // maxAge is compared with the points' ages, never waited on: it may pass MAX_TIMER_MS.
    maxAge: durationBetween('1m', '3650d').optional(),
    all: window.optional(),
    minutely: window.optional(),
    hourly: window.optional(),
    daily: window.optional(),
  })
  .superRefine((r, ctx) => {
    const given = TIERS.filter((t) => r[t] !== undefined);
    if (given.length === 0) return;
    for (const legacy of ['keep', 'maxAge'] as const) {
      if (r[legacy] !== undefined) ctx.addIssue({ code: 'custom', path: [legacy], message: `either keep and maxAge or time tiers (${TIERS.join(', ')}), not both` });
    }
    for (const t of given) {
      const bucket = TIER_BUCKET_MS[t];
      if (r[t]! < bucket) ctx.addIssue({ code: 'custom', path: [t], message: `the ${t} tier at least ${bucket / 1000}s: shorter, it holds no whole ${t === 'daily' ? 'day' : t.slice(0, -2)}` });
    }
    // Each window reaches back further than the one before it: a longer tier takes over where a shorter ends.
    given.forEach((t, i) => {
      const shorter = given.slice(0, i).find((s) => r[s]! > r[t]!);
      if (shorter) ctx.addIssue({ code: 'custom', path: [t], message: `tiers in order all ≤ minutely ≤ hourly ≤ daily: ${t} is shorter than ${shorter}` });
    });
  })
  .transform((r): Retention => {
    const tiers = Object.fromEntries(TIERS.filter((t) => r[t] !== undefined).map((t) => [t, r[t]!])) as Partial<Record<TierName, number>>;
    if (Object.keys(tiers).length > 0) return { tiers };
    return { keep: r.keep ?? 24, ...(r.maxAge !== undefined ? { maxAge: r.maxAge } : {}) };
  })
  .prefault({});

/** Tiers that could never hold more than one point of the protection (shorter than its cycle interval): path and message of each. */
export function retentionProblems(protection: { retention: Retention; continuous: boolean; rpo: number }): { path: string[]; message: string }[] {
  const { tiers } = protection.retention;
  if (!tiers) return [];
  const interval = cycleInterval(protection);
  return TIERS.filter((t) => tiers[t] !== undefined && tiers[t]! < interval).map((t) => ({
    path: [t],
    message: `the ${t} tier is shorter than the cycle interval (${seconds(interval)}, half the rpo): it would never hold a point the next one does not replace`,
  }));
}

const seconds = (ms: number) => `${ms / 1000}s`;
