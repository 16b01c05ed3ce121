/**
 * The watch's state machine on a fake clock: healthy → suspect → down only past both thresholds
 * (beats missed in a row, time since the last answer), back to healthy on an answer, and a source
 * that flaps below the threshold never down.
 */
import assert from 'node:assert/strict';
import { WatchMachine, type BeatOutcome } from '../../../plugin/watch/machine.js';

const ok: BeatOutcome = { ok: true };
const miss: BeatOutcome = { ok: false, check: 'vm', detail: 'source VM web is shutoff' };

describe('the watch state machine', () => {
  it('goes healthy → suspect → down at the third missed beat of 1 s, then healthy when the source answers', () => {
    const m = new WatchMachine({ missed: 3, after: 3000 }, 0);
    assert.deepEqual(m.beat(ok, 1000), { state: 'healthy', detail: null });
    assert.equal(m.beat(ok, 2000), undefined);
    assert.deepEqual(m.beat(miss, 3000), { state: 'suspect', detail: 'vm: source VM web is shutoff' });
    assert.equal(m.beat(miss, 4000), undefined);
    const down = m.beat(miss, 5000);
    assert.equal(down?.state, 'down');
    assert.equal(down?.detail, '3 beats missed, no answer for 3.0 s; vm: source VM web is shutoff');
    // Down stays down, with no event per beat.
    assert.equal(m.beat(miss, 6000), undefined);
    assert.equal(m.missed, 4);
    assert.deepEqual(m.beat(ok, 7000), { state: 'healthy', detail: 'answers again after 4 missed beats' });
    assert.equal(m.missed, 0);
  });

  it('waits for `after` too: three quick misses within 2 s of the last answer are still suspect', () => {
    const m = new WatchMachine({ missed: 3, after: 10_000 }, 0);
    m.beat(ok, 0);
    for (const t of [1000, 2000, 3000, 9999]) assert.notEqual(m.beat(miss, t)?.state, 'down');
    assert.equal(m.state, 'suspect');
    assert.equal(m.beat(miss, 10_000)?.state, 'down');
  });

  it('never goes down when the source answers between misses (flapping below the threshold)', () => {
    const m = new WatchMachine({ missed: 3, after: 3000 }, 0);
    const seen: string[] = [];
    let t = 0;
    for (let round = 0; round < 20; round++) {
      for (const outcome of [miss, miss, ok]) {
        const change = m.beat(outcome, (t += 1000));
        if (change) seen.push(change.state);
      }
    }
    assert.ok(!seen.includes('down'));
    assert.deepEqual(seen.slice(0, 3), ['suspect', 'healthy', 'suspect']);
  });

  it('counts from the watch start when the source never answered, and goes on from a recorded state', () => {
    const fresh = new WatchMachine({ missed: 2, after: 2000 }, 10_000);
    assert.equal(fresh.beat(miss, 11_000)?.state, 'suspect');
    assert.equal(fresh.beat(miss, 12_000)?.state, 'down');
    // A daemon restarted while its source was down: no new event until the source answers.
    const restarted = new WatchMachine({ missed: 2, after: 2000 }, 0, 'down');
    assert.equal(restarted.beat(miss, 1000), undefined);
    assert.equal(restarted.beat(ok, 2000)?.state, 'healthy');
    // A healthy source recorded before the restart is not recorded healthy again.
    assert.equal(new WatchMachine({ missed: 2, after: 2000 }, 0, 'healthy').beat(ok, 1000), undefined);
  });

  it('a single missed beat with missed: 1 and after: 1 s is down at once', () => {
    const m = new WatchMachine({ missed: 1, after: 1000 }, 0);
    m.beat(ok, 0);
    assert.equal(m.beat(miss, 1000)?.state, 'down');
  });

  it('settles in a state its beats did not make (failed over), once, and counts afresh from there', () => {
    const m = new WatchMachine({ missed: 2, after: 2000 }, 0);
    m.beat(ok, 0);
    m.beat(miss, 1000);
    assert.deepEqual(m.settle('failed-over', 'failover fo-1', 1500), { state: 'failed-over', detail: 'failover fo-1' });
    assert.equal(m.settle('failed-over', 'failover fo-1', 2500), undefined);
    assert.equal(m.missed, 0);
    // Failed back, its source not yet up: suspect, then down only past the threshold counted from the settle.
    assert.equal(m.beat(miss, 3500)?.state, 'suspect');
    assert.equal(m.beat(miss, 4000), undefined);
    assert.equal(m.beat(miss, 4500)?.state, 'down');
  });

  it('a notice (the VM stopped, told by the hypervisor) is a missed beat at once: suspect at the event, once until the next beat', () => {
    const m = new WatchMachine({ missed: 3, after: 3000 }, 0);
    m.beat(ok, 1000);
    const stopped = { ok: false as const, check: 'vm', detail: 'source VM web is shutoff (destroyed), told by its hypervisor' };
    assert.deepEqual(m.notice(stopped, 1300), { state: 'suspect', detail: 'vm: source VM web is shutoff (destroyed), told by its hypervisor' });
    // The VM's other events before the next beat add nothing.
    assert.equal(m.notice(stopped, 1301), undefined);
    assert.equal(m.missed, 1);
    // Missed 3 is reached at the second beat after it, but `after` still holds: down only 3 s after the last answer.
    assert.equal(m.beat(miss, 2000), undefined);
    assert.equal(m.beat(miss, 3000), undefined);
    assert.equal(m.state, 'suspect');
    assert.equal(m.beat(miss, 4000)?.state, 'down');
  });

  it('with `after` shorter than interval × missed, a notice brings the down one beat sooner, never before `after`', () => {
    const told = new WatchMachine({ missed: 3, after: 2000 }, 0);
    const polled = new WatchMachine({ missed: 3, after: 2000 }, 0);
    for (const m of [told, polled]) m.beat(ok, 1000);
    told.notice(miss, 1500);
    const downAt = (m: WatchMachine) => [2000, 3000, 4000].find((t) => m.beat(miss, t)?.state === 'down');
    assert.equal(downAt(told), 3000);
    assert.equal(downAt(polled), 4000);
    // A notice right after an answer cannot shorten `after`: 3 misses within 1 s are still suspect.
    const quick = new WatchMachine({ missed: 2, after: 2000 }, 0);
    quick.beat(ok, 1000);
    quick.notice(miss, 1100);
    assert.equal(quick.beat(miss, 2000)?.state, undefined);
    assert.equal(quick.state, 'suspect');
    assert.equal(quick.beat(miss, 3000)?.state, 'down');
  });

  it('a beat that answers after a notice is healthy again, and a later notice counts again', () => {
    const m = new WatchMachine({ missed: 2, after: 1000 }, 0);
    m.beat(ok, 1000);
    assert.equal(m.notice(miss, 1200)?.state, 'suspect');
    assert.deepEqual(m.beat(ok, 2000), { state: 'healthy', detail: 'answers again after 1 missed beat' });
    assert.equal(m.notice(miss, 2500)?.state, 'suspect');
    assert.equal(m.missed, 1);
  });

  it('a beat asked before the notice came, answering after it, does not undo it', () => {
    const m = new WatchMachine({ missed: 3, after: 3000 }, 0);
    m.beat(ok, 1000);
    // The round of 2000 asked; the VM stopped at 2003; the round's answer (running) came at 2010.
    assert.equal(m.notice(miss, 2003)?.state, 'suspect');
    assert.equal(m.beat(ok, 2000), undefined);
    assert.equal(m.state, 'suspect');
    assert.equal(m.missed, 1);
    assert.equal(m.beat(miss, 3000), undefined);
    assert.equal(m.beat(miss, 4000)?.state, 'down');
  });
});
