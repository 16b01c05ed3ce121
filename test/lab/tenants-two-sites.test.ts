/**
 * A tenant created on the source host of the two-site lab: its networks cannot be made on the DR
 * host from there (localSite: another host's hypervisor is not reached), so `vmdr tenant create`
 * says where they will come from, and the DR host's own vmdr makes them: `vmdr serve` when it
 * starts, once the tenant is in the DR host's config, and again idempotently on the next start.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { appendItem, editConfig } from '../../plugin/config/edit.js';
import { loadConfig } from '../../plugin/config/load.js';
import { labScratchDir } from '../helpers/lab.js';
import { twoSites, writeTwoSiteConfigs, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';

describe('tenant networks across the two-site lab', function () {
  this.timeout(180_000);
  let lab: TwoSites;
  let dir: string;
  let configs: TwoSiteConfigs;
  const adapters: Partial<Record<'source' | 'dr', HypervisorAdapter>> = {};
  const tenant = `test-rt-${process.pid.toString(36)}`;
  const network = `vmdr-t${tenant.length}-${tenant}-lan`;
  const has = async (site: 'source' | 'dr') => (await adapters[site]!.listNetworks()).some((n) => n.name === network);

  before(async () => {
    lab = await twoSites();
    dir = await labScratchDir('tenants-2s');
    configs = await writeTwoSiteConfigs(dir, { protections: '  []' });
    for (const site of ['source', 'dr'] as const) {
      adapters[site] = openAdapter(lab[site].uri);
      await adapters[site].connect();
    }
  });
  after(async () => {
    for (const a of Object.values(adapters)) {
      for (const n of await a.listNetworks()) if (n.labels?.tenant === tenant) await a.removeNetwork(n.name);
      await a.close();
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('makes the networks on the host that runs the command, and on the DR host when its vmdr serve starts', async () => {
    const created = await lab.source.vmdr(['tenant', 'create', tenant, '--network', 'lan'], { config: configs.source });
    assert.equal(created.code, 0, created.stderr);
    // Both lab sites hold storage (either may be the DR side): the source host makes its own.
    assert.equal(created.stdout, `tenant ${tenant} added to ${configs.source}\nnetwork lan: ${network}, made on site source\nDR sites on other hosts (dr): vmdr serve there makes the networks\n`);
    assert.equal(await has('source'), true);
    assert.equal(await has('dr'), false, 'the DR host was not reached from the source host');

    // The operator gives the DR host's config the same tenant, as it is on the source host.
    const entry = (await loadConfig(configs.source)).config.tenants.find((t) => t.name === tenant)!;
    await editConfig(configs.dr, (doc) => appendItem(doc, 'tenants', entry));
    for (const expectMade of [true, false]) {
      const serve = await lab.dr.serve(configs.dr);
      await serve.stop();
      const made = serve.events.filter((e) => e.event === 'tenant-network');
      assert.deepEqual(made, expectMade ? [{ event: 'tenant-network', site: 'dr', network }] : [], serve.stderr());
      assert.deepEqual(serve.events.filter((e) => e.event === 'warning'), []);
      assert.equal(await has('dr'), true);
    }
    const dr = (await adapters.dr!.listNetworks()).find((n) => n.name === network)!;
    assert.equal(dr.isolated, true);
    assert.deepEqual(dr.labels, { role: 'tenant-network', tenant, network: 'lan' });
  });
});
