/** Retention keeps a consistency group member's point of the group's newest group point. */
import assert from 'node:assert/strict';
import { keptBy, retentionCut } from '../../../plugin/replication/replica/retention.js';
import type { PointRow } from '../../../plugin/state/points.js';

const now = new Date('2026-12-01T20:00:00Z');
/** rp-1..rp-5, one an hour, the newest an hour ago. */
const points = [1, 2, 3, 4, 5].map(
  (seq) => ({ protection: 'db', seq, timeMs: now.getTime() - (6 - seq) * 3_600_000, pinned: false, replacedSource: null, disks: [] }) as unknown as PointRow,
);
const ids = (rows: PointRow[] | undefined) => (rows ?? []).map((p) => `rp-${p.seq}`);

describe('retention and group points', () => {
  it('keep/maxAge: the prefix merged into base stops at the group point', () => {
    const cut = retentionCut(points, { keep: 1 }, now, 2);
    assert.deepEqual([ids(cut.prefix?.drop), cut.prefix && `rp-${cut.prefix.target.seq}`], [['rp-1'], 'rp-2']);
    assert.deepEqual(ids(retentionCut(points, { keep: 1 }, now).prefix?.drop), ['rp-1', 'rp-2', 'rp-3', 'rp-4'], 'without a group point, all but the newest go');
  });

  it('time tiers: the group point stays as a tier would keep it, and the points around it still go', () => {
    const policy = { tiers: { all: 60_000 } };
    assert.equal(keptBy(points, policy, now, 3).get(3), 'group');
    const cut = retentionCut(points, policy, now, 3);
    assert.deepEqual(ids(cut.prefix?.drop), ['rp-1', 'rp-2']);
    assert.deepEqual(cut.middles.map((m) => [ids(m.drop), `rp-${m.above.seq}`]), [[['rp-4'], 'rp-5']]);
  });
});
