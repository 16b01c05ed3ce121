/**
 * A point's time is put on the receiver's clock: the sender says what its clock reads as it sends
 * (x-vmdr-clock), and the receiver takes the difference off the stream's createdAt. Measured end
 * to end across two hosts with a faked clock in test/lab/two-site-failover.test.ts.
 */
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, checkStreamHeader, senderClockOffsetMs } from '../../../plugin/replication/receiver/limits.js';
import type { RecoveryPoint } from '../../../plugin/replication/replica/store.js';
import { streamHeader } from '../../helpers/receiver-lab.js';

const now = Date.parse('2026-11-30T12:00:00.000Z');
const at = (ms: number) => new Date(now + ms).toISOString();
const MIN = 60_000;

describe('the sender clock offset', () => {
  it('is what the sender is behind (positive) or ahead (negative) by, beyond 2 s and within the skew limit', () => {
    assert.equal(senderClockOffsetMs(at(-5 * MIN), DEFAULT_LIMITS, now), 5 * MIN);
    assert.equal(senderClockOffsetMs(at(5 * MIN), DEFAULT_LIMITS, now), -5 * MIN);
  });

  it('is 0 within 2 s (the network and NTP), beyond the skew limit (not believed), and for what is not a time', () => {
    for (const said of [at(1_500), at(-1_999), at(11 * MIN), at(-11 * MIN), 'yesterday', '', undefined, [at(-5 * MIN)]]) {
      assert.equal(senderClockOffsetMs(said, DEFAULT_LIMITS, now), 0, String(said));
    }
  });

  it('orders a stream against its base point on the receiver clock: a source clock set right after running ahead goes on', () => {
    const base = { id: 'rp-1', time: new Date(now - MIN), disks: [{ disk: 'vda' }] } as unknown as RecoveryPoint;
    // The sender ran 5 min ahead when rp-1 was taken (stamped on the receiver's clock), and its
    // clock is now right: its createdAt is after rp-1 on the receiver's clock.
    const header = { ...streamHeader({ protection: 'p1', disks: [{ name: 'vda', sizeBytes: 1024 * 1024 }], base: 'rp-1', n: 2 }), createdAt: at(0) };
    assert.doesNotThrow(() => checkStreamHeader(header, 'p1', base, DEFAULT_LIMITS, now, 0));
    // A sender 5 min behind whose createdAt reads before rp-1: corrected, it is after it.
    const behind = { ...header, createdAt: at(-5 * MIN) };
    assert.throws(() => checkStreamHeader(behind, 'p1', base, DEFAULT_LIMITS, now, 0), { code: 'STREAM_TIME_INVALID' });
    assert.doesNotThrow(() => checkStreamHeader(behind, 'p1', base, DEFAULT_LIMITS, now, 5 * MIN));
  });
});
