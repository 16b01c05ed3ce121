/**
 * Ids of recorded runs (a failover `fo-…`, a drill `dr-…`): when it started, to the second, in UTC,
 * and two random bytes, so ids sort by time and two runs started in the same second differ.
 */
import { randomBytes } from 'node:crypto';

export function newRunId(prefix: 'fo' | 'dr', atMs: number): string {
  return `${prefix}-${new Date(atMs).toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}-${randomBytes(2).toString('hex')}`;
}
