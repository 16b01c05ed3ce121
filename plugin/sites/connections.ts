/**
 * One open adapter per site for the length of a command or a daemon task. Whoever opens a
 * connection through this pool lets the pool close it, so no command leaks a libvirt connection.
 * Where the config says which site this host is (`localSite`), only that site's hypervisor is
 * opened: another site's URI is that host's view (qemu:///system there is not qemu:///system here).
 */
import { existsSync } from 'node:fs';
import type { HypervisorAdapter, StartLeases } from '../../hypervisors/types.js';
import type { Config, Site } from '../config/schema.js';
import { NotInConfig, SiteNotLocal } from '../config/errors.js';

/**
 * Whether this host is site `site`, or may act as it: the config says this host is that site
 * (`localSite`), or says nothing (one host, or remote hypervisor URIs from here).
 */
export function isLocalSite(config: Config, site: string): boolean {
  return config.localSite === undefined || config.localSite === site;
}

export class SiteConnections {
  /** Each site's adapter, connected or connecting: callers at the same moment share one connection. */
  private readonly open = new Map<string, Promise<HypervisorAdapter>>();

  constructor(
    private readonly config: Config,
    private readonly file: string,
  ) {}

  site(name: string): Site {
    const site = this.config.sites.find((s) => s.name === name);
    if (!site) throw new NotInConfig('site', name, this.file);
    return site;
  }

  /**
   * Whether this host holds the site's replica storage: it is the site (localSite), or, without
   * localSite, the storage path exists here. Another site's path may exist here too (a shared
   * filesystem, the two-site lab) and is not this host's to read.
   */
  holdsStorage(siteName: string): boolean {
    const site = this.site(siteName);
    if (!site.storage) return false;
    const local = this.config.localSite;
    return local === undefined ? existsSync(site.storage) : local === site.name;
  }

  adapter(siteName: string): Promise<HypervisorAdapter> {
    let adapter = this.open.get(siteName);
    if (!adapter) {
      const connecting = this.connect(siteName);
      this.open.set(siteName, connecting);
      // A site that could not be opened is tried again by the next caller.
      connecting.catch(() => this.open.get(siteName) === connecting && this.open.delete(siteName));
      adapter = connecting;
    }
    return adapter;
  }

  private async connect(siteName: string): Promise<HypervisorAdapter> {
    if (!isLocalSite(this.config, siteName)) throw new SiteNotLocal(this.site(siteName).name, this.config.localSite!, this.file);
    // An adapter's modules (a hypervisor binding, its XML) load with the first site of its kind
    // opened: a command that never talks to a hypervisor (points, site, config) never loads them,
    // and one on libvirt hosts never loads vSphere's.
    const { loadAdapter } = await import('../../hypervisors/load.js');
    const site = this.site(siteName);
    const adapter = await loadAdapter(site.uri, { callTimeoutMs: site.callTimeout, ...(site.vsphere ? { vsphere: site.vsphere } : {}) });
    await adapter.connect();
    return adapter;
  }

  /**
   * The start leases of a site's host (StartLeases in hypervisors/types.ts), without its
   * hypervisor: a lease is taken back when the DR site says failed over, libvirtd up or not.
   * Undefined where this host is not the site, or its hypervisor has no start guard here.
   */
  async startLeases(siteName: string): Promise<StartLeases | undefined> {
    if (!isLocalSite(this.config, siteName)) return undefined;
    const { loadAdapter } = await import('../../hypervisors/load.js');
    // Never connected: the adapter's start guard is files on this host.
    return (await loadAdapter(this.site(siteName).uri)).startLeases;
  }

  async close(): Promise<void> {
    const adapters = [...this.open.values()];
    this.open.clear();
    await Promise.allSettled(adapters.map(async (a) => (await a).close()));
  }
}
