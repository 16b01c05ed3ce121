/** What `vmdr tenant list` and `vmdr tenant show` tell: the config's tenants, and one tenant's networks on its DR sites. */
import type { Config, Tenant } from '../config/schema.js';
import type { TenantsContext } from './create.js';
import { describeTenantNetworks, type NetworkState } from './networks.js';
import { ownedBy, type Owned } from './owned.js';
import { checkTenantName } from './spec.js';
import { TenantUnknown } from './token-errors.js';

export interface TenantSummary extends Tenant {
  owns: { protections: number; plans: number; drills: number };
}

/** From the config alone: no hypervisor is asked. */
export function listTenants(config: Config): TenantSummary[] {
  return config.tenants.map((t) => {
    const owned = ownedBy(config, t.name);
    return { ...t, owns: { protections: owned.protections.length, plans: owned.plans.length, drills: owned.drills.length } };
  });
}

export interface TenantDetails extends Tenant {
  protections: { name: string; source: { site: string; vm: string }; target: { site: string; vm: string } }[];
  plans: { name: string; groups: number }[];
  drills: { name: string; plan: string; schedule: string }[];
  /** Each network on each DR site reached from here. */
  networkStates: NetworkState[];
}

export async function showTenant(ctx: TenantsContext, name: string): Promise<TenantDetails> {
  checkTenantName(name);
  const tenant = ctx.config.tenants.find((t) => t.name === name);
  if (!tenant) throw new TenantUnknown(name, ctx.file);
  const owned: Owned = ownedBy(ctx.config, name);
  const of = <T extends { name: string }>(items: T[], names: string[]) => items.filter((i) => names.includes(i.name));
  return {
    ...tenant,
    protections: of(ctx.config.protections, owned.protections).map((p) => ({ name: p.name, source: p.source, target: { site: p.target.site, vm: p.target.vm } })),
    plans: of(ctx.config.plans, owned.plans).map((p) => ({ name: p.name, groups: p.groups.length })),
    drills: of(ctx.config.drills, owned.drills).map((d) => ({ name: d.name, plan: d.plan, schedule: d.schedule })),
    networkStates: await describeTenantNetworks(ctx.config, ctx.sites, tenant),
  };
}
