/**
 * The moment an operator names to pick a recovery point (`--at`): ISO 8601 (a date, or a date and
 * time; without an offset it is the host's local time, as JavaScript reads it), or a time back
 * from now such as `-90s`, `-15m`, `-2h`, `-1d`.
 */
import { DURATION_PATTERN, milliseconds } from '../config/duration.js';

const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;

export const POINT_TIME_EXPECTED = 'a time such as 2026-11-25T14:05:00Z or -2h (back from now)';

/** The moment, or undefined when the text is neither form. */
export function parsePointTime(text: string, now = new Date()): Date | undefined {
  const back = /^-(.+)$/.exec(text)?.[1];
  if (back !== undefined) return DURATION_PATTERN.test(back) ? new Date(now.getTime() - milliseconds(back)) : undefined;
  if (!ISO_8601.test(text)) return undefined;
  const at = new Date(text);
  return Number.isNaN(at.getTime()) ? undefined : at;
}
