/**
 * Which way a protection's source site is asked: on this host through its adapter when this host
 * is that site (or no `localSite` says which host this is), otherwise only through its endpoint.
 */
import type { Config, Protection } from '../config/schema.js';
import type { StateStore } from '../state/store.js';
import type { SiteConnections } from './connections.js';
import { LocalSourceSite } from './local-source.js';
import { RemoteSourceSite } from './remote-source.js';
import type { SourceSite } from './source-site.js';

export function sourceSiteFor(deps: { config: Config; file: string; sites: SiteConnections; state: StateStore }, p: Protection): SourceSite {
  const site = p.source.site;
  if (!deps.config.localSite || deps.config.localSite === site) return new LocalSourceSite(site, deps);
  return new RemoteSourceSite(site, deps.config, deps.file);
}
