/**
 * A protection's recovery points, wherever this runs: from this host's state file when the DR
 * site's storage is here, else from the site's receiver (a source host, an operator's host).
 */
import { existsSync } from 'node:fs';
import type { Config, Protection } from '../config/schema.js';
import type { SiteConnections } from '../sites/connections.js';
import type { StateStore } from '../state/store.js';
import { SiteStorageMissing } from '../targets/errors.js';
import { ReplicaStore, type RecoveryPoint } from './replica/store.js';
import { receiverFor } from './sender/connect.js';

export async function listRecoveryPoints(
  ctx: { config: Config; file: string; sites: SiteConnections; state: StateStore },
  protection: Protection,
): Promise<RecoveryPoint[]> {
  const site = ctx.sites.site(protection.target.site);
  if (!site.storage) throw new SiteStorageMissing(site.name, ctx.file);
  if (existsSync(site.storage)) return new ReplicaStore(site.storage, ctx.state).listPoints(protection.name);
  const receiver = await receiverFor(ctx.config, ctx.file, protection);
  try {
    return await receiver.listPoints(protection.name);
  } finally {
    receiver.close();
  }
}
