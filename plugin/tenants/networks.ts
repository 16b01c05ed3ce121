/**
 * A tenant's own DR networks on the hypervisors of its DR sites: isolated networks (no forward, no
 * host address) labelled with the tenant, made, described and removed only on the DR sites this
 * host reaches. A DR site this host does not reach (another host, `localSite` set) gets them from
 * its own vmdr: `vmdr serve` there makes every tenant's missing networks when it starts, and
 * `vmdr tenant create` there makes the new tenant's.
 */
import { NetworkConflict, VmdrError } from '../../hypervisors/errors.js';
import type { HypervisorAdapter, NetworkInfo } from '../../hypervisors/types.js';
import type { Config, Site, Tenant } from '../config/schema.js';
import { isLocalSite, type SiteConnections } from '../sites/connections.js';
import { NetworkInUse } from './errors.js';
import { isNetworkOf, tenantNetworkLabels, tenantNetworkName } from './names.js';

/** The DR sites: those holding replicas, and the target sites of protections. */
export function drSites(config: Config): Site[] {
  const targets = new Set(config.protections.map((p) => p.target.site));
  return config.sites.filter((s) => s.storage !== undefined || targets.has(s.name));
}

/** The DR sites whose hypervisor this host reaches: all of them without `localSite`, else only this host's own. */
export function tenantNetworkSites(config: Config): Site[] {
  return drSites(config).filter((s) => isLocalSite(config, s.name));
}

/**
 * The tenant's word for a network of its config entry when vmdr names and makes that network
 * (`vmdr-t4-acme-dr` → `dr`); undefined for a network the operator made and listed by hand,
 * which vmdr leaves alone.
 */
export function networkWordOf(tenant: string, network: string): string | undefined {
  const prefix = tenantNetworkName(tenant, '');
  return network.startsWith(prefix) && network.length > prefix.length ? network.slice(prefix.length) : undefined;
}

export interface SiteNetwork {
  site: string;
  network: string;
}

export interface EnsuredNetwork extends SiteNetwork {
  /** False when it was already there. */
  made: boolean;
}

/**
 * Makes the tenant's vmdr-named networks that are missing on each DR site reached from here.
 * A network of that name that vmdr did not make for this tenant is refused (NETWORK_CONFLICT).
 */
export async function ensureTenantNetworks(config: Config, sites: SiteConnections, tenant: Tenant, only?: string): Promise<EnsuredNetwork[]> {
  const ensured: EnsuredNetwork[] = [];
  for (const site of tenantNetworkSites(config).filter((s) => only === undefined || s.name === only)) {
    const adapter = await sites.adapter(site.name);
    const existing = new Map((await adapter.listNetworks()).map((n) => [n.name, n]));
    for (const network of tenant.networks) {
      const word = networkWordOf(tenant.name, network);
      if (word === undefined) continue;
      const found = existing.get(network);
      if (found && !isNetworkOf(found.labels, tenant.name)) {
        throw new NetworkConflict(network, adapter.uri, `exists and was not made by vmdr for tenant "${tenant.name}"; vmdr will not give it to the tenant`);
      }
      await adapter.ensureIsolatedNetwork({ name: network, labels: tenantNetworkLabels(tenant.name, word) });
      ensured.push({ site: site.name, network, made: !found });
    }
  }
  return ensured;
}

/** What `vmdr tenant show` says about one network on one DR site. */
export type NetworkState =
  | { site: string; network: string; exists: false }
  | { site: string; network: string; exists: true; active: boolean; isolated: boolean; bridge?: string; madeForTenant: boolean }
  | { site: string; network: string; unreachable: string };

export async function describeTenantNetworks(config: Config, sites: SiteConnections, tenant: Tenant): Promise<NetworkState[]> {
  const states: NetworkState[] = [];
  for (const site of tenantNetworkSites(config)) {
    let networks: NetworkInfo[];
    try {
      networks = await (await sites.adapter(site.name)).listNetworks();
    } catch (err) {
      if (!(err instanceof VmdrError)) throw err;
      for (const network of tenant.networks) states.push({ site: site.name, network, unreachable: err.message });
      continue;
    }
    for (const network of tenant.networks) {
      const found = networks.find((n) => n.name === network);
      states.push(
        found
          ? { site: site.name, network, exists: true, active: found.active, isolated: found.isolated, ...(found.bridge ? { bridge: found.bridge } : {}), madeForTenant: isNetworkOf(found.labels, tenant.name) }
          : { site: site.name, network, exists: false },
      );
    }
  }
  return states;
}

/** The networks vmdr made for the tenant on the DR sites reached from here, listed in its config or not. */
export async function tenantNetworksHere(config: Config, sites: SiteConnections, tenant: string): Promise<SiteNetwork[]> {
  const found: SiteNetwork[] = [];
  for (const site of tenantNetworkSites(config)) {
    for (const n of await (await sites.adapter(site.name)).listNetworks()) {
      if (isNetworkOf(n.labels, tenant)) found.push({ site: site.name, network: n.name });
    }
  }
  return found;
}

/** Refuses (NETWORK_IN_USE) when a VM that is not off is attached to one of these networks. */
export async function checkNetworksFree(sites: SiteConnections, tenant: string, networks: SiteNetwork[]): Promise<void> {
  for (const site of new Set(networks.map((n) => n.site))) {
    const adapter = await sites.adapter(site);
    const vms = await adapter.listVms();
    for (const { network } of networks.filter((n) => n.site === site)) {
      const users = vms.filter((vm) => vm.powerState !== 'shutoff' && vm.powerState !== 'crashed' && vm.nics.some((nic) => nic.network === network));
      if (users.length > 0) throw new NetworkInUse(network, adapter.uri, users.map((vm) => vm.name), tenant);
    }
  }
}

/** Removes these networks of the tenant, each checked free just before (a VM may have started since). */
export async function removeTenantNetworks(sites: SiteConnections, tenant: string, networks: SiteNetwork[]): Promise<void> {
  for (const n of networks) {
    await checkNetworksFree(sites, tenant, [n]);
    const adapter: HypervisorAdapter = await sites.adapter(n.site);
    await adapter.removeNetwork(n.network).catch((err: unknown) => {
      // Two DR sites on one hypervisor (a one-host lab) list the same network twice.
      if (!(err instanceof VmdrError && err.code === 'NETWORK_NOT_FOUND')) throw err;
    });
  }
}

/**
 * Every tenant's missing networks on the DR sites reached from here (`only`: this one site): how
 * a DR host whose config gained a tenant elsewhere gets its networks when `vmdr serve` starts.
 */
export async function ensureAllTenantNetworks(config: Config, sites: SiteConnections, only?: string): Promise<EnsuredNetwork[]> {
  const ensured: EnsuredNetwork[] = [];
  for (const tenant of config.tenants) ensured.push(...(await ensureTenantNetworks(config, sites, tenant, only)));
  return ensured;
}
