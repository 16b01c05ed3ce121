/**
 * The watch events in a real state file: listed oldest first (the newest `limit`, or those after an
 * id for --follow), per protection, and bounded: the oldest are dropped past the number kept.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StateStore } from '../../../plugin/state/store.js';
import { lastWatchEvent, listWatchEvents, recordWatchEvent } from '../../../plugin/state/watch-events.js';

describe('watch events (state schema 8)', () => {
  let dir: string;
  let state: StateStore;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-watch-events-'));
    state = StateStore.open(join(dir, 'state.db'));
  });
  after(async () => {
    state.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists the newest oldest first, those after an id, one protection; and refuses a state it does not know', () => {
    const at = (s: number) => new Date(Date.UTC(2026, 11, 1, 16, 0, s));
    for (const [i, [protection, s]] of ([['web', 'healthy'], ['db', 'healthy'], ['web', 'suspect'], ['web', 'down']] as const).entries()) {
      recordWatchEvent(state, { at: at(i), protection, site: 'src', state: s, detail: null });
    }
    assert.deepEqual(listWatchEvents(state, { limit: 2 }).map((e) => `${e.protection} ${e.state}`), ['web suspect', 'web down']);
    assert.deepEqual(listWatchEvents(state, { after: 2, limit: 10 }).map((e) => e.id), [3, 4]);
    assert.deepEqual(listWatchEvents(state, { protection: 'web', limit: 10 }).map((e) => e.state), ['healthy', 'suspect', 'down']);
    assert.equal(lastWatchEvent(state, 'web')?.state, 'down');
    assert.deepEqual(lastWatchEvent(state, 'db')?.at, at(1));
    assert.throws(() => recordWatchEvent(state, { at: at(9), protection: 'web', site: 'src', state: 'asleep' as 'down', detail: null }), /CHECK constraint failed/);
  });

  it('keeps the newest: past the number kept the oldest are dropped, every thousand events', () => {
    for (let i = 0; i < 1100; i++) recordWatchEvent(state, { at: new Date(), protection: 'flappy', site: 'src', state: i % 2 ? 'suspect' : 'healthy', detail: null }, 10);
    const ids = listWatchEvents(state, { limit: 10_000 }).map((e) => e.id);
    // Pruned at id 1000 down to its 10 newest (991 to 1000); 104 more since (4 from the test before).
    assert.equal(ids[0], 991);
    assert.equal(ids.length, 114);
  });
});
