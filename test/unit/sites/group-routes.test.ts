/**
 * The group steps on a source site's endpoint, asked by a group's coordinating site (the real
 * routes over mutual TLS on loopback, the member VM on libvirt's test driver): the coordinator
 * learns which of the site's members are down; a paired site that is not the group's coordinator
 * learns nothing; configs that disagree on the members are refused; a step of a cycle the site
 * does not run is refused by code; a site that does not answer counts as its members down, named.
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
import { RemoteHostMembers } from '../../../plugin/sites/group-client.js';
import { groupStepPath } from '../../../plugin/sites/group-protocol.js';
import { ensureIdentity } from '../../../plugin/sites/identity.js';
import { connectPeer } from '../../../plugin/sites/peer-connect.js';
import { pairPeer } from '../../../plugin/sites/peers.js';
import { StateStore } from '../../../plugin/state/store.js';
import { rejectsWith } from '../../helpers/assertions.js';
import { testDomainRunning } from '../../helpers/test-config.js';

describe('consistency group steps on a source site\'s endpoint (group-routes, RemoteHostMembers)', function () {
  this.timeout(60_000);
  let root: string;
  let state: StateStore;
  let app: FastifyInstance | undefined;
  const configs: Record<string, Config> = {};
  const file = (site: string) => join(root, `${site}.yaml`);
  const group = (as: string) => configs[as]!.consistencyGroups[0]!;
  const on = (as: string, site: string) => configs[as]!.protections.filter((p) => p.source.site === site);
  const members = (as: string, port?: number) =>
    new RemoteHostMembers(group(as), 'source', on(as, 'source'), { config: port ? withPort(configs[as]!, port) : configs[as]!, file: file(as) }, 'app@1');

  /** The same config with the source site's endpoint on another port (where nothing listens). */
  const withPort = (config: Config, port: number): Config => ({
    ...config,
    sites: config.sites.map((s) => (s.name === 'source' ? { ...s, endpoint: { ...s.endpoint!, listen: `127.0.0.1:${port}` } } : s)),
  });

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-group-routes-'));
    await testDomainRunning();
    const port = await freeLoopbackPort();
    const yaml = (local: string, sourceMembers: string) => `version: 1
localSite: ${local}
state: { path: ${join(root, `${local}.db`)} }
sites:
  - { name: source, uri: "test:///default", endpoint: { listen: "127.0.0.1:${port}", credentials: ${join(root, 'source')} } }
  - { name: coord, uri: "test:///default", endpoint: { listen: "127.0.0.1:1", credentials: ${join(root, 'coord')} } }
  - { name: other, uri: "test:///default", endpoint: { listen: "127.0.0.1:2", credentials: ${join(root, 'other')} } }
  - { name: dr, uri: "test:///default", storage: ${join(root, 'replicas')}, endpoint: { listen: "127.0.0.1:3", credentials: ${join(root, 'dr')} } }
protections:
  - { name: db, source: { site: coord, vm: test }, target: { site: dr, vm: db-dr, nics: [{ network: n }] } }
${sourceMembers
  .split(',')
  .map((m) => `  - { name: ${m}, source: { site: source, vm: test }, target: { site: dr, vm: ${m}-dr, nics: [{ network: n }] } }\n`)
  .join('')}consistencyGroups:
  - { name: app, protections: [db, ${sourceMembers.split(',').join(', ')}] }
`;
    configs.source = parseConfig(yaml('source', 'web'), file('source'));
    configs.coord = parseConfig(yaml('coord', 'web'), file('coord'));
    configs.other = parseConfig(yaml('other', 'web'), file('other'));
    // A coordinator whose config says the site has another member too.
    configs.stale = parseConfig(yaml('coord', 'web,cache'), file('stale'));
    const [source, coord, other] = await Promise.all([
      ensureIdentity(join(root, 'source'), 'source', ['127.0.0.1']),
      ensureIdentity(join(root, 'coord'), 'coord'),
      ensureIdentity(join(root, 'other'), 'other'),
    ]);
    await pairPeer(source, 'source', 'coord', coord.cert, { file: 'coord.crt' });
    await pairPeer(source, 'source', 'other', other.cert, { file: 'other.crt' });
    await pairPeer(coord, 'coord', 'source', source.cert, { file: 'source.crt' });
    await pairPeer(other, 'other', 'source', source.cert, { file: 'source.crt' });
    state = StateStore.open(join(root, 'source.db'));
    ({ app } = await startReceiver({ config: configs.source, site: 'source', credentials: source, file: file('source'), state }, { host: '127.0.0.1', port }));
  });

  after(async () => {
    await app?.close();
    state?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('answers the coordinating site which of its members are down (none: the VM runs)', async () => {
    const host = members('coord');
    try {
      assert.deepEqual(await host.down(), []);
    } finally {
      await host.close();
    }
  });

  it('a paired site that is not the group\'s coordinator: PROTECTION_UNKNOWN; configs naming other members: GROUP_MEMBERS_DIFFER', async () => {
    const client = await connectPeer(configs.other!, file('other'), 'source');
    try {
      await rejectsWith(client.json('POST', groupStepPath('app', 'down'), { members: ['web'] }), 'PROTECTION_UNKNOWN');
      await rejectsWith(client.json('POST', groupStepPath('app', 'join'), { instant: 'app@1', members: ['web'] }), 'PROTECTION_UNKNOWN');
    } finally {
      client.close();
    }
    const stale = await connectPeer(configs.stale!, file('stale'), 'source');
    try {
      const err = await rejectsWith(stale.json('POST', groupStepPath('app', 'down'), { members: ['web', 'cache'] }), 'GROUP_MEMBERS_DIFFER');
      assert.match(err.message, /site "source" has members web of group "app", and the coordinating site named web, cache/);
    } finally {
      stale.close();
    }
  });

  it('a step of a cycle the site does not run: GROUP_CYCLE_UNKNOWN; a body out of bounds: BAD_REQUEST', async () => {
    const client = await connectPeer(configs.coord!, file('coord'), 'source');
    try {
      await rejectsWith(client.json('POST', groupStepPath('app', 'hold'), { instant: 'app@1' }), 'GROUP_CYCLE_UNKNOWN');
      await rejectsWith(client.json('POST', groupStepPath('app', 'release'), { instant: 'app@1' }), 'GROUP_CYCLE_UNKNOWN');
      await rejectsWith(client.json('POST', groupStepPath('app', 'down'), { members: [] }), 'BAD_REQUEST');
      await rejectsWith(client.json('POST', groupStepPath('app', 'hold'), { instant: 'x'.repeat(201) }), 'BAD_REQUEST');
    } finally {
      client.close();
    }
  });

  it('a site that does not answer: its members are down, each named with the site', async () => {
    const host = members('coord', await freeLoopbackPort());
    try {
      const down = await host.down();
      assert.equal(down.length, 1);
      assert.equal(down[0]!.protection, 'web');
      assert.match(down[0]!.why, /^site "source" \(its host\) did not answer: source site "source" does not answer at https:\/\/127\.0\.0\.1:\d+/);
    } finally {
      await host.close();
    }
  });
});
