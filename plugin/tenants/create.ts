/**
 * `vmdr tenant create`: the tenant's DR networks first (idempotent, undone when the config change
 * fails), then its entry in the config. A tenant that exists is refused before anything changes.
 */
import { CleanupFailed } from '../../hypervisors/errors.js';
import { appendItem, editConfig } from '../config/edit.js';
import type { Config, Tenant } from '../config/schema.js';
import type { SiteConnections } from '../sites/connections.js';
import { TenantExists } from './errors.js';
import { drSites, ensureTenantNetworks, removeTenantNetworks, tenantNetworkSites, type EnsuredNetwork } from './networks.js';
import { tenantSpec, type TenantNetwork, type TenantRequest } from './spec.js';

export interface TenantsContext {
  file: string;
  config: Config;
  sites: SiteConnections;
}

export interface CreatedTenant {
  tenant: Tenant;
  /** The tenant's words for its networks and their names on the hypervisor and in the config. */
  networks: TenantNetwork[];
  /** Each network on each DR site reached from here: made now, or found. */
  ensured: EnsuredNetwork[];
  /** DR sites not reached from here: their own vmdr makes the networks there. */
  elsewhere: string[];
}

export async function createTenant(ctx: TenantsContext, request: TenantRequest): Promise<CreatedTenant> {
  const { tenant, networks } = tenantSpec(request);
  if (ctx.config.tenants.some((t) => t.name === tenant.name)) throw new TenantExists(tenant.name, ctx.file);
  const ensured: EnsuredNetwork[] = [];
  try {
    ensured.push(...(await ensureTenantNetworks(ctx.config, ctx.sites, tenant)));
    await editConfig(ctx.file, (doc, current) => {
      // Checked again under the lock: another create may have won the race.
      if (current.tenants.some((t) => t.name === tenant.name)) throw new TenantExists(tenant.name, ctx.file);
      appendItem(doc, 'tenants', tenant);
    });
  } catch (err) {
    // A tenant that is not in the config keeps no network: the next create starts clean.
    const made = ensured.filter((n) => n.made);
    await removeTenantNetworks(ctx.sites, tenant.name, made).catch((cleanupError: unknown) => {
      throw new CleanupFailed(err, `remove the networks just made: ${made.map((n) => `${n.network} on site ${n.site}`).join(', ')}`, cleanupError);
    });
    throw err;
  }
  const here = new Set(tenantNetworkSites(ctx.config));
  return { tenant, networks, ensured, elsewhere: drSites(ctx.config).filter((s) => !here.has(s)).map((s) => s.name) };
}
