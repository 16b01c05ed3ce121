/**
 * Which way a protection's source site is asked: on this host through its adapter when this host
 * is that site (or no `localSite` says which host this is), otherwise only through its endpoint.
 */
import { VmNotFound } from '../../hypervisors/errors.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import type { Config, Protection } from '../config/schema.js';
import type { StateStore } from '../state/store.js';
import { isLocalSite, type SiteConnections } from './connections.js';
import type { KeptPeers } from './kept-peers.js';
import { LocalSourceSite } from './local-source.js';
import { RemoteSourceSite } from './remote-source.js';
import type { SourceSite } from './source-site.js';

type Deps = { config: Config; file: string; sites: SiteConnections; state: StateStore; /** The watch's kept clients for its heartbeats. */ peers?: KeptPeers };


export function sourceSiteFor(deps: Deps, p: Protection): SourceSite {
  return isLocalSite(deps.config, p.source.site) ? new LocalSourceSite(p.source.site, deps) : new RemoteSourceSite(p.source.site, deps.config, deps.file, deps.peers);
}

/**
 * The source VM as resolveSource looks it up (by name, then by the recorded UUID). Another site
 * shows the DR side only the protection's own VM, by the config's name: a renamed source counts
 * as missing there.
 */
export function sourceVmLookup(deps: Deps, p: Protection): Pick<HypervisorAdapter, 'getVm'> {
  if (isLocalSite(deps.config, p.source.site)) return { getVm: async (vm) => (await deps.sites.adapter(p.source.site)).getVm(vm) };
  const site = sourceSiteFor(deps, p);
  return { getVm: (vm) => (vm === p.source.vm ? site.vm(p) : Promise.reject(new VmNotFound(vm, `site "${p.source.site}"`))) };
}
