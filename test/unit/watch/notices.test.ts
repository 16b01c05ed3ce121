/**
 * The watch hears its local sources' hypervisor at once (libvirt's domain events, on libvirt's
 * test driver): a source VM destroyed between two beats is suspect at that moment, not at the next
 * beat, and the notice counts as a missed beat: the threshold still holds, so it is down only once
 * `missed` beats were missed and `after` passed since the last answer.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseConfig } from '../../../plugin/config/load.js';
import { SiteConnections } from '../../../plugin/sites/connections.js';
import { StateStore } from '../../../plugin/state/store.js';
import { listWatchEvents } from '../../../plugin/state/watch-events.js';
import { SourceWatcher } from '../../../plugin/watch/watcher.js';
import { testDomainRunning } from '../../helpers/test-config.js';

describe('the watch told by its hypervisor (libvirt events, test:///default)', function () {
  this.timeout(60_000);
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-watch-notices-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('a source destroyed between beats is suspect within 300 ms; down only at the beats and `after` (interval 2 s, missed 2)', async () => {
    const file = join(dir, 'vmdr.yaml');
    const config = parseConfig(
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: src, uri: "test:///default" }
  - { name: dr, uri: "test:///default" }
protections:
  - name: web
    source: { site: src, vm: test }
    target: { site: dr, vm: web-dr, nics: [{ network: n }] }
    watch: { policy: notify, interval: 2s, missed: 2 }
`,
      file,
    );
    const state = StateStore.open(join(dir, 'state.db'));
    const sites = new SiteConnections(config, file);
    const watcher = new SourceWatcher({ config, file, sites, state });
    const events = () => listWatchEvents(state, { protection: 'web', limit: 10 });
    const until = async (what: string, ms: number, done: () => boolean) => {
      for (const deadline = Date.now() + ms; !done(); await sleep(10)) assert.ok(Date.now() < deadline, `${what} within ${ms} ms: ${JSON.stringify(events())}`);
    };
    try {
      const watchedAt = Date.now();
      await watcher.set([{ protection: config.protections[0]!, watch: config.protections[0]!.watch! }]);
      await until('healthy', 1000, () => events().length === 1);
      // Between beats (the next is due 2 s after the first): destroyed.
      await sleep(300);
      const adapter = await sites.adapter('src');
      await adapter.stop('test', { mode: 'force' });
      const killedAt = Date.now();
      await until('suspect', 300, () => events().length === 2);
      const suspect = events()[1]!;
      assert.equal(suspect.state, 'suspect');
      assert.equal(suspect.detail, 'vm: source VM test is shutoff (destroyed), told by its hypervisor');
      assert.ok(suspect.at.getTime() - killedAt < 300, `suspect ${suspect.at.getTime() - killedAt} ms after the kill`);
      // The notice and the next beat make the two misses, but `after` (4 s) holds: down at the round 4 s after the last answer.
      await until('down', 5000, () => events().length === 3);
      const down = events()[2]!;
      assert.equal(down.state, 'down');
      assert.match(down.detail!, /^3 beats missed, no answer for 4\.\d s; vm: source VM test is shutoff$/);
      assert.ok(down.at.getTime() - watchedAt >= 4000, `down ${down.at.getTime() - watchedAt} ms after the watch began`);
    } finally {
      await watcher.close();
      // Started again whether the test passed or not, while this test's connection still holds the driver's state.
      await testDomainRunning();
      await sites.close();
      state.close();
    }
  });
});
