/**
 * How this host calls a site's endpoint, from the config. With `localSite` set, this host is that
 * site: it presents the local site's certificate and trusts the one pinned for the site called
 * (`<credentials>/peers/SITE.crt`). Without it (one host holding every site), it presents the
 * called site's own certificate, which that endpoint takes as itself.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config, Site } from '../config/schema.js';
import { NotInConfig } from '../config/errors.js';
import { PeerNotPaired } from './errors.js';
import { credentialsDir, endpointUrl, loadIdentity, type SiteIdentity } from './identity.js';
import { pinnedCert } from './peers.js';
import { PeerClient, type PeerClientOptions, type PeerCredentials } from './peer-client.js';

export interface PeerAddress {
  url: string;
  site: string;
  credentials: PeerCredentials;
}

export async function peerAddress(config: Config, file: string, siteName: string, purpose?: string): Promise<PeerAddress> {
  const site = config.sites.find((s) => s.name === siteName);
  if (!site) throw new NotInConfig('site', siteName, file);
  if (!site.endpoint) {
    throw new VmdrError('ENDPOINT_NOT_CONFIGURED', `${file}: site "${site.name}"${purpose ? ` (${purpose})` : ''} has no endpoint`, {
      subject: { file, site: site.name },
      remedy: `add endpoint: { listen: HOST:PORT } to site "${site.name}"`,
    });
  }
  const local = config.localSite ? config.sites.find((s) => s.name === config.localSite)! : site;
  const identity = await loadIdentity(credentialsDir(config, local));
  if (local.name === site.name) return { url: endpointUrl(site.endpoint), site: site.name, credentials: asThisSite(identity) };
  const pinned = await pinnedCert(identity.dir, site.name);
  if (!pinned) throw new PeerNotPaired(site.name, local.name);
  return { url: endpointUrl(site.endpoint), site: site.name, credentials: { cert: identity.cert, key: identity.key, pinned } };
}

/** Calling a site's endpoint as that site itself (one host): its own certificate, presented and trusted. */
export function asThisSite(identity: SiteIdentity): PeerCredentials {
  return { cert: identity.cert, key: identity.key, pinned: identity.cert };
}

/** A peer client for `site`'s endpoint; the caller closes it. */
export async function connectPeer(config: Config, file: string, site: string, options: PeerClientOptions = {}): Promise<PeerClient> {
  const a = await peerAddress(config, file, site);
  return new PeerClient(a.url, a.site, a.credentials, options);
}

/** This host's site: `localSite`, else the one named, else refused. */
export function localSiteOf(config: Config, file: string, named?: string): Site {
  const name = named ?? config.localSite;
  if (!name) {
    throw new VmdrError('LOCAL_SITE_UNKNOWN', `${file}: which site is this host? Set localSite in the config or give --site`, { subject: { file } });
  }
  const site = config.sites.find((s) => s.name === name);
  if (!site) throw new NotInConfig('site', name, file);
  return site;
}
