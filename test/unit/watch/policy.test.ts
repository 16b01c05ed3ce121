/**
 * What the watch does when a source goes down, policy by policy: notify tells only; confirm
 * prepares a failover; automatic fails over unless an earlier automatic failover holds the
 * protection; nothing starts while a failover of it is already under way.
 */
import assert from 'node:assert/strict';
import { actionOnDown } from '../../../plugin/watch/policy.js';

describe('watch policy on a down source', () => {
  const held = { protection: 'web', failover: 'fo-1', since: new Date(0) };

  it('notify does nothing more than the event, held or not', () => {
    assert.deepEqual(actionOnDown('notify', {}), { act: 'none' });
    assert.deepEqual(actionOnDown('notify', { held }), { act: 'none' });
  });

  it('automatic fails over; confirm prepares one (it waits for an approval)', () => {
    assert.deepEqual(actionOnDown('automatic', {}), { act: 'fail-over', watch: 'automatic' });
    assert.deepEqual(actionOnDown('confirm', {}), { act: 'fail-over', watch: 'confirm' });
  });

  it('automatic does nothing while an earlier automatic failover holds the protection, and says how to clear it', () => {
    assert.deepEqual(actionOnDown('automatic', { held }), { act: 'none', why: 'no automatic failover: failover fo-1 of web holds it until cleared with `vmdr watch clear web`' });
    // A person decides on each confirm: the hold is about automatic actions only.
    assert.deepEqual(actionOnDown('confirm', { held }), { act: 'fail-over', watch: 'confirm' });
  });

  it('nothing starts while a failover of the protection is under way', () => {
    for (const policy of ['automatic', 'confirm'] as const) assert.deepEqual(actionOnDown(policy, { busy: 'failover fo-2' }), { act: 'none', why: 'failover fo-2 is already under way' });
  });
});
