/**
 * Where a question about a protection's replica is answered: this host's state file and storage
 * when the DR site's storage is here, else the site's receiver (a source host, an operator's host).
 */
import type { Config, Protection } from '../config/schema.js';
import type { SiteConnections } from '../sites/connections.js';
import type { StateStore } from '../state/store.js';
import { SiteStorageMissing } from '../targets/errors.js';
import { receiverFor } from './sender/connect.js';
import type { ReceiverClient } from './sender/receiver-client.js';

export type DrContext = { config: Config; file: string; sites: SiteConnections; state: StateStore };

export async function atDrSite<T>(
  ctx: DrContext,
  protection: Protection,
  here: (storage: string, state: StateStore) => T,
  remote: (receiver: ReceiverClient) => Promise<T>,
): Promise<T> {
  const site = ctx.sites.site(protection.target.site);
  if (!site.storage) throw new SiteStorageMissing(site.name, ctx.file);
  if (ctx.sites.holdsStorage(site.name)) return here(site.storage, ctx.state);
  const receiver = await receiverFor(ctx.config, ctx.file, protection);
  try {
    return await remote(receiver);
  } finally {
    receiver.close();
  }
}
