/**
 * The DR site asks the source site through its endpoint (RemoteSourceSite against the real
 * source-site routes over mutual TLS on loopback, the source VM on libvirt's test driver): answers
 * and NDJSON results come back, refusals keep their code, a site that is not the protection's DR
 * site learns nothing, and a source site that does not answer is SOURCE_SITE_UNREACHABLE naming it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { parseConfig } from '../../../plugin/config/load.js';
import type { Config } from '../../../plugin/config/schema.js';
import { startReceiver } from '../../../plugin/replication/receiver/server.js';
import { freeLoopbackPort } from '../../../plugin/replication/sender/nbd-port.js';
import { ensureIdentity } from '../../../plugin/sites/identity.js';
import { connectPeer } from '../../../plugin/sites/peer-connect.js';
import { pairPeer } from '../../../plugin/sites/peers.js';
import { RemoteSourceSite } from '../../../plugin/sites/remote-source.js';
import { SOURCE_SITE_PREFIX } from '../../../plugin/sites/source-site.js';
import { StateStore } from '../../../plugin/state/store.js';
import { lastWatchEvent, listWatchEvents } from '../../../plugin/state/watch-events.js';
import { SourceWatcher } from '../../../plugin/watch/watcher.js';
import { SiteConnections } from '../../../plugin/sites/connections.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer, type Socket } from 'node:net';
import { rejectsWith } from '../../helpers/assertions.js';
import { testDomainRunning } from '../../helpers/test-config.js';

describe('the source site asked through its endpoint (RemoteSourceSite, source-site routes)', function () {
  this.timeout(60_000);
  let root: string;
  let port: number;
  let state: StateStore;
  let app: FastifyInstance | undefined;
  const configs: Record<string, Config> = {};
  const file = (site: string) => join(root, `${site}.yaml`);
  const remote = (as: string) => new RemoteSourceSite('source', configs[as]!, file(as));
  const web = (as: string) => configs[as]!.protections.find((p) => p.name === 'web')!;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-source-site-'));
    await testDomainRunning();
    port = await freeLoopbackPort();
    const yaml = (local: string) => `version: 1
localSite: ${local}
state: { path: ${join(root, `${local}.db`)} }
sites:
  - { name: source, uri: "test:///default", endpoint: { listen: "127.0.0.1:${port}", credentials: ${join(root, 'source')} } }
  - { name: dr, uri: "test:///default", storage: ${join(root, 'replicas')}, endpoint: { listen: "127.0.0.1:1", credentials: ${join(root, 'dr')} } }
  - { name: other, uri: "test:///default", storage: ${join(root, 'other-replicas')}, endpoint: { listen: "127.0.0.1:2", credentials: ${join(root, 'other')} } }
protections:
  - { name: web, source: { site: source, vm: test }, target: { site: dr, vm: web-dr, nics: [{ network: n }] } }
${local === 'dr' ? '  - { name: ghost, source: { site: source, vm: test }, target: { site: dr, vm: ghost-dr, nics: [{ network: n }] } }\n' : ''}`;
    for (const site of ['source', 'dr', 'other']) configs[site] = parseConfig(yaml(site), file(site));
    const [source, dr, other] = await Promise.all([
      ensureIdentity(join(root, 'source'), 'source', ['127.0.0.1']),
      ensureIdentity(join(root, 'dr'), 'dr'),
      ensureIdentity(join(root, 'other'), 'other'),
    ]);
    // The source site is paired with both; only dr is web's DR site.
    await pairPeer(source, 'source', 'dr', dr.cert, { file: 'dr.crt' });
    await pairPeer(source, 'source', 'other', other.cert, { file: 'other.crt' });
    await pairPeer(dr, 'dr', 'source', source.cert, { file: 'source.crt' });
    await pairPeer(other, 'other', 'source', source.cert, { file: 'source.crt' });
    state = StateStore.open(join(root, 'source.db'));
    ({ app } = await startReceiver({ config: configs.source!, site: 'source', credentials: source, file: file('source'), state }, { host: '127.0.0.1', port }));
  });

  after(async () => {
    await app?.close();
    state?.close();
    await rm(root, { recursive: true, force: true });
  });

  it("answers the source VM's power state and definition, and a stop's result after its NDJSON lines", async () => {
    const site = remote('dr');
    assert.equal(site.remote, true);
    assert.equal(await site.powerState(web('dr')), 'running');
    assert.equal((await site.vm(web('dr'))).name, 'test');
    try {
      const stopped = await site.stop(web('dr'), { mode: 'force' });
      assert.equal(stopped.was, 'running');
      assert.ok(Date.parse(stopped.stoppedAt) > 0);
    } finally {
      // Running again for the watch's tests below (the driver's state outlives this test while any connection of the process is open).
      await testDomainRunning();
    }
  });

  it("a protection the source site does not have, and a site that is not the protection's DR site: PROTECTION_UNKNOWN", async () => {
    const ghost = configs.dr!.protections.find((p) => p.name === 'ghost')!;
    await rejectsWith(remote('dr').powerState(ghost), 'PROTECTION_UNKNOWN');
    await rejectsWith(remote('other').powerState(web('other')), 'PROTECTION_UNKNOWN');
    await rejectsWith(remote('other').fence(web('other'), 'fo-1'), 'PROTECTION_UNKNOWN');
  });

  it("answers a heartbeat for the DR site's protections in one request; another site's, or one it does not have: PROTECTION_UNKNOWN", async () => {
    const beat = await remote('dr').heartbeat([{ protection: web('dr'), agent: false }]);
    assert.deepEqual(beat, { vms: { web: { state: await remote('dr').powerState(web('dr')) } } });
    // What one beat costs both sites together (one process here) without the watch's kept connection: a new TLS connection each.
    const cpu = process.cpuUsage();
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t = performance.now();
      await remote('dr').heartbeat([{ protection: web('dr'), agent: false }]);
      times.push(performance.now() - t);
    }
    const used = process.cpuUsage(cpu);
    times.sort((a, b) => a - b);
    console.log(`      one heartbeat through the endpoint: median ${times[5]!.toFixed(1)} ms, ${((used.user + used.system) / 10 / 1000).toFixed(1)} ms CPU (both sites)`);
    const ghost = configs.dr!.protections.find((p) => p.name === 'ghost')!;
    await rejectsWith(remote('dr').heartbeat([{ protection: web('dr'), agent: false }, { protection: ghost, agent: false }]), 'PROTECTION_UNKNOWN');
    await rejectsWith(remote('other').heartbeat([{ protection: web('other'), agent: false }]), 'PROTECTION_UNKNOWN');
    const client = await connectPeer(configs.dr!, file('dr'), 'source');
    try {
      await rejectsWith(client.json('POST', `${SOURCE_SITE_PREFIX}/heartbeat`, { protections: [] }), 'BAD_REQUEST');
    } finally {
      client.close();
    }
  });

  it("the watch's beats of a source site share one kept TLS connection, not one each", async () => {
    const dr = configs.dr!;
    const drState = StateStore.open(join(root, 'dr-kept.db'));
    const sites = new SiteConnections(dr, file('dr'));
    let beats = 0;
    const beatSockets = new Set<unknown>();
    const onRequest = (req: { url?: string; socket: unknown }) => {
      if (!req.url?.endsWith('/heartbeat')) return;
      beats++;
      beatSockets.add(req.socket);
    };
    app!.server.on('request', onRequest);
    const watcher = new SourceWatcher({ config: dr, file: file('dr'), sites, state: drState });
    try {
      await watcher.set([{ protection: web('dr'), watch: { policy: 'notify', interval: 1000, missed: 3, after: 3000 } }]);
      for (const deadline = Date.now() + 10_000; beats < 4; await sleep(50)) assert.ok(Date.now() < deadline, `${beats} beats within 10 s`);
      assert.equal(lastWatchEvent(drState, 'web')?.state, 'healthy');
      assert.equal(beatSockets.size, 1, `${beats} beats over ${beatSockets.size} TLS connections`);
    } finally {
      await watcher.close();
      app!.server.off('request', onRequest);
      await sites.close();
      drState.close();
    }
  });

  it("a source VM destroyed on the source site is told to the DR site's watch at once, through the endpoint's held notices", async () => {
    const dr = configs.dr!;
    const drState = StateStore.open(join(root, 'dr-notices.db'));
    const sites = new SiteConnections(dr, file('dr'));
    // The source site's own hypervisor (libvirt's test driver is one per process while a connection to it is open).
    const hypervisor = new SiteConnections(configs.source!, file('source'));
    const source = await hypervisor.adapter('source');
    if ((await source.powerState('test')) !== 'running') await source.start('test');
    const watcher = new SourceWatcher({ config: dr, file: file('dr'), sites, state: drState });
    try {
      await watcher.set([{ protection: web('dr'), watch: { policy: 'notify', interval: 5000, missed: 2, after: 10_000 } }]);
      for (const deadline = Date.now() + 5000; lastWatchEvent(drState, 'web')?.state !== 'healthy'; await sleep(20)) assert.ok(Date.now() < deadline, 'healthy within 5 s');
      // The notices are held once the first round began: let the request reach the source site.
      await sleep(500);
      await source.stop('test', { mode: 'force' });
      const killedAt = Date.now();
      for (const deadline = killedAt + 1000; lastWatchEvent(drState, 'web')?.state !== 'suspect'; await sleep(10)) assert.ok(Date.now() < deadline, 'suspect within 1 s of the kill (the next beat is 4 s away)');
      const suspect = lastWatchEvent(drState, 'web')!;
      assert.equal(suspect.detail, 'vm: source VM test is shutoff (destroyed), told by its hypervisor');
      assert.equal(suspect.site, 'source');
    } finally {
      await watcher.close();
      await source.start('test').catch(() => undefined);
      await hypervisor.close();
      await sites.close();
      drState.close();
    }
  });

  it('a body out of bounds is refused with 400 BAD_REQUEST, before anything runs', async () => {
    const client = await connectPeer(configs.dr!, file('dr'), 'source');
    try {
      await rejectsWith(client.json('POST', `${SOURCE_SITE_PREFIX}/web/stop`, { mode: 'pull-the-plug' }), 'BAD_REQUEST');
      await rejectsWith(client.json('POST', `${SOURCE_SITE_PREFIX}/web/fence`, { failover: 'x'.repeat(200) }), 'BAD_REQUEST');
      await rejectsWith(client.json('POST', `${SOURCE_SITE_PREFIX}/notices`, { protections: [] }), 'BAD_REQUEST');
      await rejectsWith(client.json('POST', `${SOURCE_SITE_PREFIX}/notices`, { protections: ['ghost'] }), 'PROTECTION_UNKNOWN');
    } finally {
      client.close();
    }
  });

  it('a source site that does not answer: SOURCE_SITE_UNREACHABLE naming it', async () => {
    await app!.close();
    app = undefined;
    const err = await rejectsWith(remote('dr').powerState(web('dr')), 'SOURCE_SITE_UNREACHABLE');
    assert.equal(err.subject.site, 'source');
    assert.match(err.message, /^source site "source" does not answer at https:\/\/127\.0\.0\.1:\d+/);
  });

  it("the watch of a source site that does not answer: missed beats of check 'site', down after the threshold", async () => {
    const dr = configs.dr!;
    const drState = StateStore.open(join(root, 'dr.db'));
    const sites = new SiteConnections(dr, file('dr'));
    const watcher = new SourceWatcher({ config: dr, file: file('dr'), sites, state: drState });
    try {
      await watcher.set([{ protection: web('dr'), watch: { policy: 'notify', interval: 1000, missed: 2, after: 1000 } }]);
      for (const deadline = Date.now() + 5000; lastWatchEvent(drState, 'web')?.state !== 'down'; await sleep(50)) assert.ok(Date.now() < deadline, 'no down event within 5 s');
      const events = listWatchEvents(drState, { protection: 'web', limit: 10 });
      assert.deepEqual(events.map((e) => [e.state, e.site]), [['suspect', 'source'], ['down', 'source']]);
      assert.match(events[1]!.detail!, /^2 beats missed, no answer for 1\.\d s; site: source site "source" does not answer at https:\/\/127\.0\.0\.1:\d+/);
    } finally {
      await watcher.stop();
      await sites.close();
      drState.close();
    }
  });

  it('the watch of a source site that hangs: missed beats, and one connection for them all, not one per beat', async () => {
    const dr = configs.dr!;
    const drState = StateStore.open(join(root, 'dr-hang.db'));
    const sites = new SiteConnections(dr, file('dr'));
    const held: Socket[] = [];
    const hung = createServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => hung.listen(port, '127.0.0.1', resolve));
    const watcher = new SourceWatcher({ config: dr, file: file('dr'), sites, state: drState });
    try {
      await watcher.set([{ protection: web('dr'), watch: { policy: 'notify', interval: 1000, missed: 3, after: 3000 } }]);
      for (const deadline = Date.now() + 6000; lastWatchEvent(drState, 'web')?.state !== 'down'; await sleep(50)) assert.ok(Date.now() < deadline, 'no down event within 6 s');
      const down = lastWatchEvent(drState, 'web')!;
      assert.match(down.detail!, /^4 beats missed, no answer for 3\.\d s; site: site "source" has not answered the heartbeat asked [23]\.\d s ago$/);
      // One for the beats (asked once while unanswered, not once per beat), one for the held notices.
      assert.equal(held.length, 2);
    } finally {
      await watcher.stop();
      await sites.close();
      drState.close();
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => hung.close(() => resolve()));
    }
  });
});
