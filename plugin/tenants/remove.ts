/**
 * `vmdr tenant remove`: the tenant's entry leaves the config, then its networks leave its DR
 * sites. Refused while it owns protections, even with --force: a protection is customers' data
 * (its replica and recovery points), and removing the tenant under it would leave data no tenant
 * owns. --force removes only what holds no data: the tenant's plans and their drills.
 *
 * The config changes first: a network removal that fails (a VM started on it meanwhile) leaves a
 * network labelled for a tenant the config no longer has, and running the same command again
 * removes it. The other order would leave a tenant whose networks are gone.
 */
import { editConfig, removeNamedItems } from '../config/edit.js';
import type { Config } from '../config/schema.js';
import type { TenantsContext } from './create.js';
import { TenantInUse } from './errors.js';
import { checkNetworksFree, removeTenantNetworks, tenantNetworksHere, type SiteNetwork } from './networks.js';
import { describeOwned, ownedBy, type Owned } from './owned.js';
import { checkTenantName } from './spec.js';
import { TenantUnknown } from './token-errors.js';

export interface RemovedTenant {
  tenant: string;
  /** False when the config had no such tenant any more and only its leftover networks went. */
  removedFromConfig: boolean;
  /** Plans and drills --force removed with it. */
  removed: Pick<Owned, 'plans' | 'drills'>;
  networks: SiteNetwork[];
}

export async function removeTenant(ctx: TenantsContext, name: string, options: { force?: boolean } = {}): Promise<RemovedTenant> {
  checkTenantName(name);
  const inConfig = ctx.config.tenants.some((t) => t.name === name);
  // What it owns is refused before any hypervisor is asked: it needs none to answer.
  if (inConfig) refuseWhileOwned(ctx.config, name, options.force ?? false);
  const networks = await tenantNetworksHere(ctx.config, ctx.sites, name);
  if (!inConfig && networks.length === 0) throw new TenantUnknown(name, ctx.file);
  let removed: Pick<Owned, 'plans' | 'drills'> = { plans: [], drills: [] };
  if (inConfig) {
    await checkNetworksFree(ctx.sites, name, networks);
    ({ result: removed } = await editConfig(ctx.file, (doc, current) => {
      // Checked again under the lock: a protection may have been added since.
      if (!current.tenants.some((t) => t.name === name)) throw new TenantUnknown(name, ctx.file);
      const owned = refuseWhileOwned(current, name, options.force ?? false);
      removeNamedItems(doc, 'drills', current.drills, new Set(owned.drills));
      removeNamedItems(doc, 'plans', current.plans, new Set(owned.plans));
      removeNamedItems(doc, 'tenants', current.tenants, new Set([name]));
      return { plans: owned.plans, drills: owned.drills };
    }));
  }
  await removeTenantNetworks(ctx.sites, name, networks);
  return { tenant: name, removedFromConfig: inConfig, removed, networks };
}

function refuseWhileOwned(config: Config, tenant: string, force: boolean): Owned {
  const owned = ownedBy(config, tenant);
  if (owned.protections.length > 0) {
    throw new TenantInUse(
      tenant,
      describeOwned(force ? { protections: owned.protections } : owned),
      'remove its protections from the config first (their replicas stay on the DR site); --force never removes protections',
    );
  }
  if (!force && owned.plans.length + owned.drills.length > 0) {
    throw new TenantInUse(tenant, describeOwned(owned), 'remove them first, or pass --force to remove its plans and drills with it');
  }
  return owned;
}
