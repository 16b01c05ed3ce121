/**
 * Tenants and their own DR networks, against libvirt's test driver (test:///default, shared by
 * every connection of this process): names that would collide under `<tenant>-<network>` give two
 * networks, each isolated and labelled; removal is refused while the tenant owns protections (even
 * forced) or a running VM uses its network, and then takes the networks away.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAdapter } from '../../hypervisors/index.js';
import { bridgeNameFor } from '../../hypervisors/libvirt/networks.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { appendItem, editConfig, removeNamedItems } from '../../plugin/config/edit.js';
import { loadConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { createTenant, type TenantsContext } from '../../plugin/tenants/create.js';
import { listTenants, showTenant } from '../../plugin/tenants/describe.js';
import { ensureAllTenantNetworks } from '../../plugin/tenants/networks.js';
import { removeTenant } from '../../plugin/tenants/remove.js';
import { rejectsWith } from '../helpers/assertions.js';

const URI = 'test:///default';

describe('tenants and their DR networks (libvirt test driver)', () => {
  let dir: string;
  let file: string;
  let adapter: HypervisorAdapter;
  const opened: SiteConnections[] = [];

  const config = (localSite?: string) => `# tenants test
version: 1
${localSite ? `localSite: ${localSite}\n` : ''}state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: prod, uri: "${URI}" }
  - { name: dr, uri: "${URI}", storage: ${join(dir, 'storage')} }
`;

  async function context(): Promise<TenantsContext> {
    const loaded = await loadConfig(file);
    const sites = new SiteConnections(loaded.config, loaded.file);
    opened.push(sites);
    return { file: loaded.file, config: loaded.config, sites };
  }

  const networksOf = async (tenant: string) => (await adapter.listNetworks()).filter((n) => n.labels?.tenant === tenant);
  const protection = (name: string, tenant: string | undefined, network: string) => ({
    name,
    ...(tenant ? { tenant } : {}),
    source: { site: 'prod', vm: `test-src-${name}` },
    target: { site: 'dr', vm: `test-dr-${name}`, nics: [{ network }] },
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-tenants-'));
    await mkdir(join(dir, 'storage'));
    adapter = openAdapter(URI);
    await adapter.connect();
  });
  beforeEach(async () => {
    file = join(dir, 'vmdr.yaml');
    await writeFile(file, config());
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
    for (const n of await adapter.listNetworks()) if (n.labels?.role === 'tenant-network') await adapter.removeNetwork(n.name);
  });
  after(async () => {
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('gives tenants "t-a-b" + "c" and "t-a" + "b-c" two different isolated networks, labelled with their tenant', async () => {
    const one = await createTenant(await context(), { name: 't-a-b', networks: ['c'] });
    const two = await createTenant(await context(), { name: 't-a', networks: ['b-c'], vmQuota: '3', storageQuotaGiB: '50', description: 'second' });
    assert.deepEqual(one.networks, [{ network: 'c', name: 'vmdr-t5-t-a-b-c' }]);
    assert.deepEqual(two.networks, [{ network: 'b-c', name: 'vmdr-t3-t-a-b-c' }]);
    assert.deepEqual(two.ensured, [{ site: 'dr', network: 'vmdr-t3-t-a-b-c', made: true }]);
    for (const [tenant, name, word] of [['t-a-b', 'vmdr-t5-t-a-b-c', 'c'], ['t-a', 'vmdr-t3-t-a-b-c', 'b-c']] as const) {
      const [net, ...more] = await networksOf(tenant);
      assert.equal(more.length, 0);
      assert.equal(net!.name, name);
      assert.equal(net!.isolated, true, 'no <forward>, no <ip>');
      assert.equal(net!.active, true);
      assert.deepEqual(net!.labels, { role: 'tenant-network', tenant, network: word });
    }
    const { config: written } = await loadConfig(file);
    assert.deepEqual(written.tenants, [
      { name: 't-a-b', networks: ['vmdr-t5-t-a-b-c'] },
      { name: 't-a', description: 'second', quota: { storageGiB: 50, vms: 3 }, networks: ['vmdr-t3-t-a-b-c'] },
    ]);
    assert.match(await readFile(file, 'utf8'), /^# tenants test\n/, "the operator's comment stays");
    assert.deepEqual(listTenants(written).map((t) => [t.name, t.owns.protections]), [['t-a-b', 0], ['t-a', 0]]);
  });

  it('refuses names with path separators, "..", control characters, twice the same tenant, and too long a network name', async () => {
    const ctx = await context();
    for (const name of ['../x', 'a/b', '..', 'a\nb', '-a', '']) {
      const err = await rejectsWith(createTenant(ctx, { name }), 'TENANT_INVALID');
      assert.match(err.message, /^tenant name ".*" is not a name of letters, digits/);
      assert.doesNotMatch(err.message, /\n/);
    }
    assert.equal((await rejectsWith(createTenant(ctx, { name: 'ok', networks: ['x/y'] }), 'TENANT_INVALID')).message, 'network name "x/y" is not a name of letters, digits, ".", "-" or "_" starting with a letter or digit (at most 63)');
    assert.match((await rejectsWith(createTenant(ctx, { name: 'ok', vmQuota: '2.5' }), 'TENANT_INVALID')).message, /^VM quota "2.5" is not a whole number above 0$/);
    assert.match((await rejectsWith(createTenant(ctx, { name: 'a'.repeat(40), networks: ['n'.repeat(20)] }), 'TENANT_INVALID')).message, /would make the DR network "vmdr-t40-a+-n+", 70 characters: tenant and network names together may hold at most 53$/);
    await createTenant(ctx, { name: 'ok' });
    const err = await rejectsWith(createTenant(await context(), { name: 'ok' }), 'TENANT_EXISTS');
    assert.equal(err.message, `${file}: tenant "ok" already exists`);
    assert.deepEqual((await loadConfig(file)).config.tenants.map((t) => [t.name, t.networks]), [['ok', ['vmdr-t2-ok-dr']]]);
  });

  it('shows quotas, networks as the DR site has them, protections, plans and drills', async () => {
    await createTenant(await context(), { name: 'acme', networks: ['lan', 'dmz'], vmQuota: 2 });
    await editConfig(file, (doc) => {
      appendItem(doc, 'protections', protection('web', 'acme', 'vmdr-t4-acme-lan'));
      appendItem(doc, 'plans', { name: 'acme-all', tenant: 'acme', groups: [{ name: 'g', vms: ['web'] }] });
      appendItem(doc, 'drills', { name: 'monthly', plan: 'acme-all', schedule: '0 3 1 * *' });
    });
    await adapter.removeNetwork('vmdr-t4-acme-dmz');
    const shown = await showTenant(await context(), 'acme');
    assert.deepEqual(shown.quota, { vms: 2 });
    assert.deepEqual(shown.networkStates, [
      { site: 'dr', network: 'vmdr-t4-acme-lan', exists: true, active: true, isolated: true, bridge: bridgeNameFor('vmdr-t4-acme-lan'), madeForTenant: true },
      { site: 'dr', network: 'vmdr-t4-acme-dmz', exists: false },
    ]);
    assert.deepEqual(shown.protections, [{ name: 'web', source: { site: 'prod', vm: 'test-src-web' }, target: { site: 'dr', vm: 'test-dr-web' } }]);
    assert.deepEqual(shown.plans, [{ name: 'acme-all', groups: 1 }]);
    assert.deepEqual(shown.drills, [{ name: 'monthly', plan: 'acme-all', schedule: '0 3 1 * *' }]);
    // `vmdr serve` at start makes what is missing, and only that.
    assert.deepEqual(await ensureAllTenantNetworks((await context()).config, (await context()).sites), [
      { site: 'dr', network: 'vmdr-t4-acme-lan', made: false },
      { site: 'dr', network: 'vmdr-t4-acme-dmz', made: true },
    ]);
    await rejectsWith(showTenant(await context(), 'nobody'), 'TENANT_UNKNOWN');
  });

  it('refuses removal while the tenant owns a protection, even forced; then removes it and its networks', async () => {
    await createTenant(await context(), { name: 'acme', networks: ['lan'] });
    await editConfig(file, (doc) => {
      appendItem(doc, 'protections', protection('web', 'acme', 'vmdr-t4-acme-lan'));
      // A plan of the tenant may hold protections of no tenant: it outlives "web".
      appendItem(doc, 'protections', protection('shared', undefined, 'default'));
      appendItem(doc, 'plans', { name: 'acme-all', tenant: 'acme', groups: [{ name: 'g', vms: ['web', 'shared'] }] });
    });
    const before = await readFile(file);
    const err = await rejectsWith(removeTenant(await context(), 'acme'), 'TENANT_IN_USE');
    assert.equal(err.message, 'tenant "acme" still owns 1 protection ("web") and 1 plan ("acme-all")');
    const forced = await rejectsWith(removeTenant(await context(), 'acme', { force: true }), 'TENANT_IN_USE');
    assert.equal(forced.message, 'tenant "acme" still owns 1 protection ("web")');
    assert.match(forced.remedy!, /--force never removes protections/);
    assert.deepEqual(await readFile(file), before, 'nothing changed');
    assert.equal((await networksOf('acme')).length, 1);

    // The config refuses to lose a protection a plan names: the plan lets go of it first.
    await rejectsWith(editConfig(file, (doc, c) => removeNamedItems(doc, 'protections', c.protections, new Set(['web']))), 'CONFIG_INVALID');
    await editConfig(file, (doc, c) => {
      doc.deleteIn(['plans', 0, 'groups', 0, 'vms', 0]);
      removeNamedItems(doc, 'protections', c.protections, new Set(['web']));
    });
    await rejectsWith(removeTenant(await context(), 'acme'), 'TENANT_IN_USE');
    const removed = await removeTenant(await context(), 'acme', { force: true });
    assert.deepEqual(removed, { tenant: 'acme', removedFromConfig: true, removed: { plans: ['acme-all'], drills: [] }, networks: [{ site: 'dr', network: 'vmdr-t4-acme-lan' }] });
    assert.deepEqual(await networksOf('acme'), []);
    const { config: after } = await loadConfig(file);
    assert.deepEqual([after.tenants, after.plans], [[], []]);
    await rejectsWith(removeTenant(await context(), 'acme'), 'TENANT_UNKNOWN');
  });

  it('refuses to remove a network a running VM uses, and changes nothing', async () => {
    await createTenant(await context(), { name: 'acme' });
    const vm = 'test-tenant-running';
    await adapter.defineVm({ name: vm, memoryMiB: 64, vcpus: 1, boot: { kind: 'disk' }, disks: [], nics: [{ network: 'vmdr-t4-acme-dr' }] });
    try {
      await adapter.start(vm);
      const before = await readFile(file);
      const err = await rejectsWith(removeTenant(await context(), 'acme'), 'NETWORK_IN_USE');
      assert.equal(err.message, `network "vmdr-t4-acme-dr" of tenant "acme" on ${URI} is in use by running VM "${vm}"`);
      assert.deepEqual(await readFile(file), before);
      assert.equal((await networksOf('acme')).length, 1);
      await adapter.stop(vm, { mode: 'force' });
      await removeTenant(await context(), 'acme');
      assert.deepEqual(await networksOf('acme'), []);
    } finally {
      await adapter.stop(vm, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(vm);
    }
  });

  it('takes back the networks it made when the config change is refused', async () => {
    const stale = await context();
    // Another create won the race: the tenant is in the file, not in what this one loaded.
    await editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'acme', networks: ['vmdr-t4-acme-dr'] }));
    await rejectsWith(createTenant(stale, { name: 'acme' }), 'TENANT_EXISTS');
    assert.deepEqual(await networksOf('acme'), []);
  });

  it('with localSite set to the source site, makes no network on the DR site and says where they will be made', async () => {
    await writeFile(file, config('prod'));
    const created = await createTenant(await context(), { name: 'acme' });
    assert.deepEqual(created.ensured, []);
    assert.deepEqual(created.elsewhere, ['dr']);
    assert.deepEqual(await networksOf('acme'), []);
    assert.deepEqual((await loadConfig(file)).config.tenants[0]!.networks, ['vmdr-t4-acme-dr']);
  });
});
