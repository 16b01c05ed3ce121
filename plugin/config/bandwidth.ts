/**
 * Bandwidth limits with time windows (docs/replication.md "Bandwidth limits"): a site link's and a
 * protection's `bandwidth`, one rate ("20MB/s", "unlimited") or a list of rules tried in order, the
 * first that matches the sending host's local time winning; none matching means unlimited.
 *
 * Time is the wall clock of the sending host (its TZ): a window follows local time through DST, so
 * on the spring-forward day a window inside the skipped hour does not happen, and on the fall-back
 * day a window inside the repeated hour applies to both. A window whose `from` is after its `to`
 * runs past midnight: its days are the days it starts on (fri 22:00–06:00 ends Saturday 06:00).
 */
import { z } from 'zod';

/** Bytes per second; Infinity is unlimited. */
export type Rate = number;

const UNITS: Record<string, number> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  kbit: 1e3 / 8,
  Mbit: 1e6 / 8,
  Gbit: 1e9 / 8,
};
const RATE_PATTERN = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB|kbit|Mbit|Gbit)\/s$/;
const RATE_EXPECTED = 'a rate such as 20MB/s, 500KiB/s or 100Mbit/s, or "unlimited"';
/** Below this a chunk of the stream would take seconds, and a window change could not act within one. */
const LEAST_RATE = 1024;

export const rate = z.string().transform((text, ctx): Rate => {
  if (text === 'unlimited') return Infinity;
  const m = RATE_PATTERN.exec(text.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text)} is not ${RATE_EXPECTED}` });
    return z.NEVER;
  }
  const bytes = Number(m[1]) * UNITS[m[2]!]!;
  if (bytes < LEAST_RATE) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text)} is too small: at least 1KiB/s (say "unlimited" for no limit)` });
    return z.NEVER;
  }
  return bytes;
});

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

/** "mon-fri", "sat,sun", "mon-wed,fri" (a range may wrap: "fri-mon") → the set of days (0 = Sunday). */
const days = z.string().transform((text, ctx): number[] => {
  const out = new Set<number>();
  for (const part of text.toLowerCase().split(',').map((s) => s.trim())) {
    const ends = part.split('-').map((s) => DAY_NAMES.indexOf(s as (typeof DAY_NAMES)[number]));
    if (ends.length > 2 || ends.some((d) => d < 0)) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(part)} is not a day: days as mon, tue, wed, thu, fri, sat, sun, ranges such as mon-fri, joined by ","` });
      return z.NEVER;
    }
    const [first, last = first] = ends as [number, number?];
    for (let d = first; ; d = (d + 1) % 7) {
      out.add(d);
      if (d === last) break;
    }
  }
  return [...out].sort((a, b) => a - b);
});

const TIME_PATTERN = /^([01]\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?$/;
/** "08:00" or "08:00:30" → seconds since midnight; "24:00" only as the end of a window. */
const timeOfDay = (end: boolean) =>
  z.string().transform((text, ctx): number => {
    const m = TIME_PATTERN.exec(text);
    const seconds = m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3] ?? 0) : NaN;
    if (!m || seconds > 86_400 || (seconds === 86_400 && !end)) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(text)} is not a time of day: HH:MM or HH:MM:SS from 00:00 to 23:59:59${end ? ' (or 24:00)' : ''}` });
      return z.NEVER;
    }
    return seconds;
  });

const RuleSchema = z
  .strictObject({
    limit: rate,
    /** Days the window starts on; default every day. */
    days: days.optional(),
    /** Local time the window starts (default 00:00) and ends, excluded (default 24:00). */
    from: timeOfDay(false).optional(),
    to: timeOfDay(true).optional(),
  })
  .superRefine((r, ctx) => {
    if (r.from !== undefined && r.to !== undefined && r.from % 86_400 === r.to % 86_400) {
      ctx.addIssue({ code: 'custom', path: ['to'], message: 'a window that ends when it starts: leave out from and to for the whole day' });
    }
  });

export type BandwidthRule = z.output<typeof RuleSchema>;
/** Rules tried in order; a plain rate is one rule for all times. */
export type BandwidthSchedule = BandwidthRule[];

const always = (r: BandwidthRule) => r.days === undefined && r.from === undefined && r.to === undefined;

const RulesSchema = z
  .array(RuleSchema)
  .min(1, 'at least one rule (or leave bandwidth out for no limit)')
  .superRefine((rules, ctx) => {
    const catchAll = rules.findIndex(always);
    if (catchAll >= 0 && catchAll < rules.length - 1) {
      ctx.addIssue({ code: 'custom', path: [catchAll + 1], message: `never used: rule ${catchAll} (no days, from or to) matches at every time` });
    }
  });

/**
 * A site link's or a protection's `bandwidth`: a rate, or rules whose first match wins. Not a
 * z.union: its one "invalid input" would hide which part of which rule is wrong.
 */
export const BandwidthSchema = z.unknown().transform((value, ctx): BandwidthSchedule => {
  const parsed = typeof value === 'string' ? rate.safeParse(value) : RulesSchema.safeParse(value);
  if (parsed.success) return typeof parsed.data === 'number' ? [{ limit: parsed.data }] : (parsed.data as BandwidthSchedule);
  for (const issue of parsed.error.issues) {
    const message = issue.code === 'invalid_type' && issue.path.length === 0 ? RATE_EXPECTED.replace(/"unlimited"$/, '"unlimited", or a list of rules { limit, days, from, to }') : issue.message;
    ctx.addIssue({ code: 'custom', path: issue.path as (string | number)[], message });
  }
  return z.NEVER;
});

/** Whether the rule's window holds at local day `day` (0 = Sunday) and second `second` of that day. */
function holds(rule: BandwidthRule, day: number, second: number): boolean {
  const from = rule.from ?? 0;
  const to = rule.to ?? 86_400;
  const on = (d: number) => rule.days === undefined || rule.days.includes(d);
  if (from < to) return on(day) && second >= from && second < to;
  // Past midnight: the evening part on a day of the rule, the morning part on the day after one.
  return (on(day) && second >= from) || (on((day + 6) % 7) && second < to);
}

/** The limit in force at `at` on this host's local clock: the first rule whose window holds, else unlimited. */
export function limitAt(schedule: BandwidthSchedule | undefined, at: Date): Rate {
  if (!schedule) return Infinity;
  const day = at.getDay();
  const second = at.getHours() * 3600 + at.getMinutes() * 60 + at.getSeconds();
  return schedule.find((r) => holds(r, day, second))?.limit ?? Infinity;
}

/** "20 MB/s", "unlimited": for people, in the units the config most often uses. */
export function formatRate(bytesPerSecond: Rate): string {
  if (!Number.isFinite(bytesPerSecond)) return 'unlimited';
  const [value, unit] = bytesPerSecond >= 1e9 ? [bytesPerSecond / 1e9, 'GB'] : bytesPerSecond >= 1e6 ? [bytesPerSecond / 1e6, 'MB'] : [bytesPerSecond / 1e3, 'KB'];
  return `${Number(value.toFixed(2))} ${unit}/s`;
}

/**
 * The first instant after `at` at which the tightest of `schedules` changes its limit, and the limit
 * from then; undefined when it never does. A change can happen only where some rule's window opens or
 * closes (a `from` or `to`, on the host's local clock as limitAt reads it), so those instants over the
 * next eight days are tried in order: every schedule repeats weekly.
 */
export function nextLimitChange(schedules: (BandwidthSchedule | undefined)[], at: Date): { at: Date; limit: Rate } | undefined {
  const tightest = (t: Date) => Math.min(...schedules.map((s) => limitAt(s, t)));
  const edges = new Set<number>();
  for (const rule of schedules.flatMap((s) => s ?? [])) {
    if (always(rule)) continue;
    for (let day = 0; day <= 8; day += 1) {
      for (const second of [rule.from ?? 0, rule.to ?? 86_400]) {
        // Local midnight plus the seconds, as the Date constructor normalizes them: across DST the wall clock's time.
        const edge = new Date(at.getFullYear(), at.getMonth(), at.getDate() + day, 0, 0, second).getTime();
        if (edge > at.getTime()) edges.add(edge);
      }
    }
  }
  const now = tightest(at);
  for (const edge of [...edges].sort((a, b) => a - b)) {
    const limit = tightest(new Date(edge));
    if (limit !== now) return { at: new Date(edge), limit };
  }
  return undefined;
}
