/**
 * The source site asked on this host: its VM through the site's own adapter. Used by the runner
 * when this host is the source site (or no `localSite` is set), and by the source site's endpoint
 * when the DR site asks (source-site-routes.ts).
 */
import { setTimeout as delay } from 'node:timers/promises';
import { VmdrError } from '../../hypervisors/errors.js';
import type { HypervisorAdapter, PowerState, Progress, StopOptions, VmInfo } from '../../hypervisors/types.js';
import type { Config, HealthSpec, Protection } from '../config/schema.js';
import { healthSummary, waitUntilHealthy } from '../failover/health.js';
import { fileSize } from '../failover/serial-health.js';
import { receiverFor } from '../replication/sender/connect.js';
import type { StateStore } from '../state/store.js';
import type { SiteConnections } from './connections.js';
import { fenceSource, startUnfenced, unfenceSource } from './fence.js';
import { BEAT_AGENT_TIMEOUT_MS, type BeatAsk, type FinalSync, type SourceBeat, type SourceFence, type SourceHealth, type SourceNotice, type SourceSite, type SourceStop } from './source-site.js';

/** A final sync that meets a cycle of the daemon's loop waits for it this many times, a second apart. */
const BUSY_ATTEMPTS = 10;

export class LocalSourceSite implements SourceSite {
  readonly remote = false;

  constructor(
    readonly site: string,
    private readonly deps: { config: Config; file: string; sites: SiteConnections; state: StateStore },
  ) {}

  private adapter(): Promise<HypervisorAdapter> {
    return this.deps.sites.adapter(this.site);
  }

  async powerState(p: Protection): Promise<PowerState> {
    return (await this.adapter()).powerState(p.source.vm);
  }

  async vm(p: Protection, options: { sizes?: boolean } = {}): Promise<VmInfo> {
    const adapter = await this.adapter();
    if (options.sizes !== false) return adapter.getVm(p.source.vm);
    // Not found by name: the config may name it by its UUID, which getVm resolves.
    const [vm] = await adapter.listVms({ names: [p.source.vm] });
    return vm ?? adapter.getVm(p.source.vm);
  }

  async stop(p: Protection, how: Omit<StopOptions, 'signal'>, signal?: AbortSignal): Promise<SourceStop> {
    const adapter = await this.adapter();
    const was = await adapter.powerState(p.source.vm);
    if (was !== 'shutoff') await adapter.stop(p.source.vm, { ...how, ...(signal ? { signal } : {}) });
    return { stoppedAt: new Date().toISOString(), was };
  }

  /**
   * The final delta from the shut-off source. A cycle the daemon's loop started at the same moment
   * makes the receiver answer "busy": wait for it and try again.
   */
  async finalSync(p: Protection, options: { signal?: AbortSignal; onProgress?: (progress: Progress) => void } = {}): Promise<FinalSync> {
    // The sender (NBD, zstd) is a planned failover's: `vmdr status` asks this site for power states only.
    const { syncProtection } = await import('../replication/sync.js');
    const receiver = await receiverFor(this.deps.config, this.deps.file, p);
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          const result = await syncProtection(p, { sites: this.deps.sites, state: this.deps.state, receiver }, options);
          return { point: result.point.id, kind: result.kind, bytesShipped: result.bytesShipped };
        } catch (err) {
          if (!(err instanceof VmdrError && err.code === 'REPLICA_BUSY') || attempt >= BUSY_ATTEMPTS) throw err;
          await delay(1000, undefined, { signal: options.signal });
        }
      }
    } finally {
      receiver.close();
    }
  }

  async fence(p: Protection, failover: string): Promise<SourceFence> {
    const { fencedAt, was } = await fenceSource(await this.adapter(), p.source.vm, { protection: p.name, failover });
    return { fencedAt, was };
  }

  /** The fence lifted, then adapter.start, which writes the split-brain start token on this host, the VM's own. */
  async startSource(p: Protection): Promise<{ serialFrom: number }> {
    const adapter = await this.adapter();
    const log = await adapter.serialLogPath(p.source.vm);
    const running = (await adapter.powerState(p.source.vm)) === 'running';
    // Only what this boot prints counts; a source already running is read from the start.
    const serialFrom = running || !log ? 0 : await fileSize(log);
    if (running) await unfenceSource(adapter, p.source.vm);
    else await startUnfenced(adapter, p.source.vm);
    return { serialFrom };
  }

  async waitHealthy(p: Protection, health: HealthSpec, serialFrom: number, signal?: AbortSignal): Promise<SourceHealth> {
    return healthSummary(await waitUntilHealthy(await this.adapter(), p.source.vm, health, { serialFrom, ...(signal ? { signal } : {}) }));
  }

  /** Each VM's power state, asked at once; a VM the hypervisor does not know is missing, any other failure is the site's. */
  async heartbeat(asks: BeatAsk[]): Promise<SourceBeat> {
    const adapter = await this.adapter();
    const entries = await Promise.all(
      asks.map(async ({ protection: p, agent }) => {
        let state: SourceBeat['vms'][string]['state'];
        try {
          state = await adapter.powerState(p.source.vm);
        } catch (err) {
          if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return [p.name, { state: 'missing' as const }] as const;
          throw err;
        }
        if (!agent || state !== 'running') return [p.name, { state }] as const;
        try {
          await adapter.guestAgentPing(p.source.vm, BEAT_AGENT_TIMEOUT_MS);
          return [p.name, { state, agent: { ok: true } }] as const;
        } catch (err) {
          if (!(err instanceof VmdrError)) throw err;
          return [p.name, { state, agent: { ok: false, detail: err.message } }] as const;
        }
      }),
    );
    return { vms: Object.fromEntries(entries) };
  }

  /** From the adapter's own notices (HypervisorAdapter.watchVms), matched to the protections by their source VM's name or id. */
  async notices(protections: Protection[], onNotice: (notice: SourceNotice) => void, signal: AbortSignal): Promise<boolean> {
    const adapter = await this.adapter();
    if (!adapter.watchVms) return false;
    const unwatch = adapter.watchVms((n) => {
      if (n.kind === 'closed') return onNotice({ state: 'closed', why: n.why, at: n.at });
      for (const p of protections) if (p.source.vm === n.vm || p.source.vm === n.id) onNotice({ protection: p.name, state: n.state, why: n.why, at: n.at });
    });
    try {
      await aborted(signal);
    } finally {
      unwatch();
    }
    return true;
  }
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
}
