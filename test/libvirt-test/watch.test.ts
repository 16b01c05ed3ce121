/**
 * The watcher on libvirt's test driver, as `vmdr serve` runs it: a running source is recorded
 * healthy; a missing one and one destroyed go suspect, then down within interval × missed + 1 s,
 * each change recorded (what `vmdr events` reads) and POSTed to a real webhook on loopback as
 * watch-<state>; a source started again is healthy again.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Notifier } from '../../plugin/notifications/notifier.js';
import { setRole } from '../../plugin/state/roles.js';
import { listWatchEvents, type WatchEvent } from '../../plugin/state/watch-events.js';
import { SourceWatcher } from '../../plugin/watch/watcher.js';
import { watchedOnSite } from '../../plugin/watch/watched.js';
import { closeTestConfig, openTestConfig, testDomainRunning, writeTestConfig } from '../helpers/test-config.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';

describe('the watcher (libvirt test driver)', function () {
  this.timeout(60_000);
  let dir: string | undefined;
  let opened: Partial<Awaited<ReturnType<typeof openTestConfig>>> = {};
  let hook: WebhookReceiver;
  let watcher: SourceWatcher | undefined;

  const states = (protection: string) => listWatchEvents(opened.state!, { protection, limit: 100 }).map((e) => e.state);
  async function until(protection: string, state: WatchEvent['state'], timeoutMs: number, after = 0): Promise<WatchEvent> {
    for (const deadline = Date.now() + timeoutMs; ; await sleep(50)) {
      const found = listWatchEvents(opened.state!, { protection, after, limit: 100 }).find((e) => e.state === state);
      if (found) return found;
      assert.ok(Date.now() < deadline, `${protection}: no ${state} event within ${timeoutMs} ms; events: ${states(protection).join(', ')}`);
    }
  }

  before(async () => {
    hook = await startWebhookReceiver();
    ({ dir } = await writeTestConfig(
      'test-vmdr-watch',
      `notifications: { webhooks: [{ url: "${hook.url}", events: [watch-suspect, watch-down, watch-healthy] }] }
protections:
  - name: web
    source: { site: src, vm: test }
    target: { site: dr, vm: web-dr, nics: [{ network: default }] }
    watch: { interval: 1s, missed: 2 }
  - name: ghost
    source: { site: src, vm: no-such-vm }
    target: { site: dr, vm: ghost-dr, nics: [{ network: default }] }
    watch: { interval: 1s, missed: 2 }
  - name: unwatched
    source: { site: src, vm: test }
    target: { site: dr, vm: unwatched-dr, nics: [{ network: default }] }
`,
    ));
    opened = await openTestConfig(`${dir}/vmdr.yaml`);
  });

  after(async () => {
    await watcher?.stop();
    await hook?.close();
    // The tests stop `test` and start it again; a test that failed in between did not.
    await testDomainRunning();
    await closeTestConfig(dir, opened);
  });

  it('records healthy, then suspect and down for a missing source and a destroyed one, told to the webhook; healthy again once started', async () => {
    const { config, state, sites } = opened as Required<typeof opened>;
    const notifier = new Notifier(config.notifications);
    const watched = watchedOnSite(config, 'dr');
    assert.deepEqual(watched.map((w) => w.protection.name), ['web', 'ghost']);
    watcher = new SourceWatcher({ config, file: `${dir}/vmdr.yaml`, sites, state, notifier });
    await watcher.set(watched);

    await until('web', 'healthy', 3000);
    const down = await until('ghost', 'down', 4000);
    assert.deepEqual(states('ghost'), ['suspect', 'down']);
    assert.match(down.detail!, /^3 beats missed, no answer for 2\.\d s; vm: source VM no-such-vm is missing on site src$/);

    const adapter = await sites.adapter('src');
    const killed = Date.now();
    await adapter.stop('test', { mode: 'force' });
    const webDown = await until('web', 'down', 4000);
    // The detection target: interval × missed + 1 s.
    assert.ok(webDown.at.getTime() - killed <= 2 * 1000 + 1000, `down ${webDown.at.getTime() - killed} ms after the kill`);
    assert.match(webDown.detail!, /vm: source VM test is shutoff$/);

    await adapter.start('test');
    const back = await until('web', 'healthy', 3000, webDown.id);
    assert.match(back.detail!, /^answers again after [23] missed beats$/);
    assert.deepEqual(states('web'), ['healthy', 'suspect', 'down', 'healthy']);
    assert.deepEqual(states('unwatched'), []);

    // Every change reached the webhook, in order per protection, as watch-<state>.
    const told = await hook.waitFor(6);
    const web = told.filter((r) => r.json.protection === 'web').map((r) => [r.headers['x-vmdr-event'], r.json.state, r.json.site, r.json.policy]);
    assert.deepEqual(web, [
      ['watch-healthy', 'healthy', 'src', 'notify'],
      ['watch-suspect', 'suspect', 'src', 'notify'],
      ['watch-down', 'down', 'src', 'notify'],
      ['watch-healthy', 'healthy', 'src', 'notify'],
    ]);
    assert.deepEqual(told.filter((r) => r.json.protection === 'ghost').map((r) => r.json.event), ['watch-suspect', 'watch-down']);
    await notifier.idle();
  });

  it("a guest TCP check from the DR site: healthy while the port accepts, down once it refuses", async () => {
    const { config, state, sites } = opened as Required<typeof opened>;
    await watcher?.stop();
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const web = config.protections.find((p) => p.name === 'web')!;
    const svc = { ...web, name: 'svc' };
    watcher = new SourceWatcher({ config, file: `${dir}/vmdr.yaml`, sites, state });
    await watcher.set([{ protection: svc, watch: { policy: 'notify', interval: 1000, missed: 2, after: 2000, guest: { agent: false, tcp: `127.0.0.1:${port}` } } }]);
    const healthy = await until('svc', 'healthy', 3000);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const down = await until('svc', 'down', 4000, healthy.id);
    assert.match(down.detail!, new RegExp(`; tcp 127\\.0\\.0\\.1:${port}: connection refused$`));
    await watcher.stop();
  });

  it('a failed-over protection is recorded failed-over and not beaten (its source is off on purpose); after failback, healthy again', async () => {
    const { config, state, sites } = opened as Required<typeof opened>;
    await watcher?.stop();
    const before = listWatchEvents(state, { limit: 1 }).at(-1)?.id ?? 0;
    setRole(state.db, 'web', 'failed-over', { failover: 'fo-20261201T160000-abcd', point: 'rp-3' });
    watcher = new SourceWatcher({ config, file: `${dir}/vmdr.yaml`, sites, state });
    await watcher.set(watchedOnSite(config, 'dr').filter((w) => w.protection.name === 'web'));
    const settled = await until('web', 'failed-over', 3000, before);
    assert.equal(settled.detail, 'failover fo-20261201T160000-abcd: the source is not watched until failback');
    const adapter = await sites.adapter('src');
    await adapter.stop('test', { mode: 'force' });
    await sleep(3000);
    assert.deepEqual(listWatchEvents(state, { protection: 'web', after: before, limit: 10 }).map((e) => e.state), ['failed-over']);
    setRole(state.db, 'web', 'replicating');
    await adapter.start('test');
    const back = await until('web', 'healthy', 3000, settled.id);
    // A beat that timed out on a loaded machine while the source started says so; either way healthy.
    assert.match(back.detail ?? '', /^$|^answers again after \d+ missed beats?$/);
    await watcher.stop();
  });
});
