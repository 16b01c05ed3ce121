/**
 * Cycle reports as a replication loop hands them to its onCycle (plugin/replication/continuous.ts),
 * for tests of what consumes them (metrics, the RPO monitor) without running a sync.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import { CRASH_CONSISTENT } from '../../plugin/replication/consistency.js';
import type { CycleReport } from '../../plugin/replication/continuous.js';
import type { SyncResult } from '../../plugin/replication/sync.js';

let seq = 0;

/** A committed incremental cycle whose point is the state of `pointTime`. */
export function committedCycle(protection: string, pointTime: number, figures: { bytesShipped?: number; durationMs?: number } = {}): CycleReport {
  seq += 1;
  const bytesShipped = figures.bytesShipped ?? 65_536;
  const durationMs = figures.durationMs ?? 800;
  const result: SyncResult = {
    protection,
    kind: 'incremental',
    reason: 'checkpoint test-cp is on both sites',
    point: {
      id: `rp-${seq}`,
      protection,
      seq,
      time: new Date(pointTime),
      committedAt: new Date(pointTime + durationMs),
      checkpoint: `vmdr-test-${seq}`,
      since: `vmdr-test-${seq - 1}`,
      kind: 'incremental',
      bytesShipped,
      dataBytes: bytesShipped,
      zeroBytes: 0,
      disks: [],
      pinned: false,
      replacedSource: null,
      ...CRASH_CONSISTENT,
    },
    checkpoint: `vmdr-test-${seq}`,
    since: `vmdr-test-${seq - 1}`,
    bytesCovered: bytesShipped,
    bytesShipped,
    durationMs,
    warnings: [],
    source: { vm: `test-${protection}`, uuid: '00000000-0000-4000-8000-000000000001' },
  };
  return { protection, result };
}

/** A failed cycle, with a VmdrError of `code` (or, without a code, an error vmdr did not expect). */
export function failedCycle(protection: string, code?: string): CycleReport {
  const error = code ? new VmdrError(code, `test failure ${code}`) : new Error('something unexpected');
  return { protection, error };
}
