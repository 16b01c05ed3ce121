/**
 * The hold after an automatic failover, in a real state file: a failover the watch started
 * automatically holds its protections (a plan's: every one of them) until `vmdr watch clear P`
 * (the built CLI: an audit record and a watch event); a run of the watch's confirm or by hand
 * holds nothing; a newer automatic failover holds again.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listAudit } from '../../../plugin/state/audit.js';
import { insertFailover } from '../../../plugin/state/failovers.js';
import { StateStore } from '../../../plugin/state/store.js';
import { listWatchEvents, recordWatchEvent } from '../../../plugin/state/watch-events.js';
import { holdOf } from '../../../plugin/watch/hold.js';
import { assertOneLineError } from '../../helpers/assertions.js';
import { runVmdr } from '../../helpers/lab.js';

describe('the hold after an automatic failover', function () {
  this.timeout(60_000);
  let dir: string;
  let file: string;
  let state: StateStore;
  let startedAt = Date.now() - 60_000;
  const run = (id: string, request: object) => {
    startedAt += 1000;
    insertFailover(state.db, { id, kind: 'unplanned', plan: null, request: JSON.stringify({ kind: 'unplanned', ...request }), startedAtMs: startedAt, failureAtMs: startedAt });
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-watch-hold-'));
    file = join(dir, 'vmdr.yaml');
    await writeFile(
      file,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: src, uri: "qemu+ssh://src.invalid/system" }
  - { name: dr, uri: "qemu+ssh://dr.invalid/system" }
protections:
  - name: web
    source: { site: src, vm: web-vm }
    target: { site: dr, vm: web-dr, nics: [{ network: n }] }
    watch: { policy: automatic }
  - name: db
    source: { site: src, vm: db-vm }
    target: { site: dr, vm: db-dr, nics: [{ network: n }] }
`,
    );
    state = StateStore.open(join(dir, 'state.db'));
  });
  after(async () => {
    state.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('holds nothing after runs by hand or by confirm', () => {
    run('fo-hand', { protections: ['web'] });
    run('fo-confirm', { protections: ['web'], watch: 'confirm', force: true });
    assert.equal(holdOf(state, 'web'), undefined);
  });

  it("an automatic one holds every protection of its run until cleared; clearing refuses what nothing holds", async () => {
    run('fo-auto', { plan: 'shop', protections: ['web', 'db'], watch: 'automatic', force: true });
    assert.equal(holdOf(state, 'web')?.failover, 'fo-auto');
    assert.equal(holdOf(state, 'db')?.failover, 'fo-auto');
    recordWatchEvent(state, { at: new Date(), protection: 'web', site: 'src', state: 'failed-over', detail: null });

    const cleared = await runVmdr(['watch', 'clear', 'web-vm', '--config', file]);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.match(cleared.stdout, /^web: cleared by \S+: the watch may act again after automatic failover fo-auto\n$/);
    assert.equal(holdOf(state, 'web'), undefined);
    assert.equal(holdOf(state, 'db')?.failover, 'fo-auto', 'db is still held: it was not cleared');
    const [event] = listWatchEvents(state, { protection: 'web', limit: 1 });
    assert.deepEqual([event!.state, event!.detail], ['failed-over', cleared.stdout.slice('web: '.length, -1)]);
    assert.deepEqual(listAudit(state, { limit: 1 }).map((a) => [a.action, a.object, a.result, a.actor]), [['watch.clear', 'web', 'ok', 'cli']]);

    const again = await runVmdr(['watch', 'clear', 'web', '--config', file]);
    assert.equal(again.code, 1);
    assertOneLineError(again, /^vmdr: protection "web" is not held: no automatic failover of it since it was last cleared/);
  });

  it('a newer automatic failover holds it again', () => {
    startedAt = Date.now();
    run('fo-auto-2', { protections: ['web'], watch: 'automatic', force: true });
    assert.equal(holdOf(state, 'web')?.failover, 'fo-auto-2');
  });
});
