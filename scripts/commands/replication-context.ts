/**
 * What every replication command opens and closes: the config, the site connections, the state
 * store. One place, so no command forgets to close a libvirt connection or the SQLite file.
 */
import { loadConfig } from '../../plugin/config/load.js';
import type { Config } from '../../plugin/config/schema.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { StateStore } from '../../plugin/state/store.js';

export interface ReplicationContext {
  file: string;
  config: Config;
  /** Which text of the config file (load.ts). */
  fingerprint: string;
  sites: SiteConnections;
  state: StateStore;
}

export async function withReplicationContext<T>(configFile: string, work: (ctx: ReplicationContext) => Promise<T>): Promise<T> {
  const { file, config, fingerprint } = await loadConfig(configFile);
  const state = StateStore.open(config.state.path);
  const sites = new SiteConnections(config, file);
  try {
    return await work({ file, config, fingerprint, sites, state });
  } finally {
    await sites.close();
    state.close();
  }
}
