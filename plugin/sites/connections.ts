/**
 * One open adapter per site for the length of a command or a daemon task. Whoever opens a
 * connection through this pool lets the pool close it, so no command leaks a libvirt connection.
 */
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import type { Config, Site } from '../config/schema.js';
import { NotInConfig } from '../config/errors.js';

export class SiteConnections {
  private readonly open = new Map<string, HypervisorAdapter>();

  constructor(
    private readonly config: Config,
    private readonly file: string,
  ) {}

  site(name: string): Site {
    const site = this.config.sites.find((s) => s.name === name);
    if (!site) throw new NotInConfig('site', name, this.file);
    return site;
  }

  async adapter(siteName: string): Promise<HypervisorAdapter> {
    const existing = this.open.get(siteName);
    if (existing) return existing;
    const adapter = openAdapter(this.site(siteName).uri);
    await adapter.connect();
    this.open.set(siteName, adapter);
    return adapter;
  }

  async close(): Promise<void> {
    const adapters = [...this.open.values()];
    this.open.clear();
    await Promise.allSettled(adapters.map((a) => a.close()));
  }
}
