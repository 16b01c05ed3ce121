/**
 * Durations as the config writes them ("90s", "15m", "4h", "7d"), parsed to milliseconds. Their
 * own module so that schemas of their own files (retention.ts) can use them without a cycle
 * through schema.ts.
 */
import { z } from 'zod';

export const DURATION_PATTERN = /^(\d+)(s|m|h|d)$/;
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
export type DurationText = `${number}${keyof typeof UNIT_MS}`;
export const milliseconds = (text: string): number => {
  const [, amount, unit] = DURATION_PATTERN.exec(text)!;
  return Number(amount) * UNIT_MS[unit as keyof typeof UNIT_MS];
};

/** Node's timers take at most 2^31-1 ms (24.8 days); a longer delay fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * "90s", "15m", "4h", "7d" → milliseconds, from `min` to `max`. Each duration says its own range: a
 * duration vmdr waits on must not reach MAX_TIMER_MS, and nothing sensible is 0.
 */
export function durationBetween(min: DurationText, max: DurationText) {
  const [low, high] = [milliseconds(min), milliseconds(max)];
  return z
    .string()
    .regex(DURATION_PATTERN, 'a duration such as 30s, 15m, 4h or 7d')
    .transform(milliseconds)
    .refine((ms) => ms >= low && ms <= high, `a duration from ${min} to ${max}`);
}

/** Any delay a timer can wait for (the CLI's --shutdown-timeout). */
export const duration = durationBetween('1s', '24d');
