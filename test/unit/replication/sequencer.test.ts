import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { SequencerByKey } from '../../../plugin/replication/receiver/sequencer.js';

describe('one receiver operation per protection at a time', () => {
  it('runs one key in arrival order, other keys alongside, a failure not blocking the next', async () => {
    const turns = new SequencerByKey();
    const log: string[] = [];
    const job = (name: string, ms: number, fail = false) => async () => {
      log.push(`${name} start`);
      await sleep(ms);
      log.push(`${name} end`);
      if (fail) throw new Error(`${name} failed`);
      return name;
    };
    const a1 = turns.run('a', job('a1', 30, true));
    const a2 = turns.run('a', job('a2', 5));
    const b1 = turns.run('b', job('b1', 5));
    await assert.rejects(a1, /a1 failed/);
    assert.equal(await a2, 'a2');
    assert.equal(await b1, 'b1');
    assert.ok(log.indexOf('b1 end') < log.indexOf('a1 end'), 'b does not wait for a');
    assert.ok(log.indexOf('a1 end') < log.indexOf('a2 start'), 'a2 waits for a1');
  });

  it('idle() waits for work queued while it waits', async () => {
    const turns = new SequencerByKey();
    let done = 0;
    void turns.run('a', async () => {
      await sleep(20);
      done += 1;
      void turns.run('b', async () => {
        await sleep(20);
        done += 1;
      });
    });
    await turns.idle();
    assert.equal(done, 2);
  });
});
