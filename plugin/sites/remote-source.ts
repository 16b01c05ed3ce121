/**
 * The source site asked through its endpoint (`vmdr serve` there), from the DR site: this host
 * never reaches the source's hypervisor. Every answer is the source site's own, its errors
 * rebuilt with their code; a site that does not answer, or whose answer breaks off before its
 * result, is SOURCE_SITE_UNREACHABLE.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { PowerState, Progress, StopOptions, VmInfo } from '../../hypervisors/types.js';
import type { Config, HealthSpec, Protection } from '../config/schema.js';
import { SourceSiteUnreachable } from './errors.js';
import { resultOf } from './ndjson.js';
import type { KeptPeers } from './kept-peers.js';
import type { PeerClient } from './peer-client.js';
import { connectPeer } from './peer-connect.js';
import { SOURCE_SITE_PREFIX, SOURCE_SITE_HEARTBEAT, SOURCE_SITE_NOTICES, type BeatAsk, type SourceNotice, type SourceBeat, type FinalSync, type SourceFence, type SourceHealth, type SourceSite, type SourceStop } from './source-site.js';

/** The source site sends a line at least every 15 s while it works: this much silence is a lost site. */
const IDLE_MS = 60_000;

export class RemoteSourceSite implements SourceSite {
  readonly remote = true;

  constructor(
    readonly site: string,
    private readonly config: Config,
    private readonly file: string,
    /** Kept clients for the heartbeats (the watch's); without them each call opens its own connection. */
    private readonly peers?: KeptPeers,
  ) {}

  async powerState(p: Protection): Promise<PowerState> {
    return ((await this.ask(p, 'power')) as { state: PowerState }).state;
  }

  async vm(p: Protection): Promise<VmInfo> {
    return ((await this.ask(p, 'vm')) as { vm: VmInfo }).vm;
  }

  stop(p: Protection, how: Omit<StopOptions, 'signal'>, signal?: AbortSignal): Promise<SourceStop> {
    return this.operate(p, 'stop', how, { signal }) as Promise<SourceStop>;
  }

  finalSync(p: Protection, options: { signal?: AbortSignal; onProgress?: (progress: Progress) => void } = {}): Promise<FinalSync> {
    return this.operate(p, 'final-sync', {}, options) as Promise<FinalSync>;
  }

  fence(p: Protection, failover: string): Promise<SourceFence> {
    return this.operate(p, 'fence', { failover }) as Promise<SourceFence>;
  }

  startSource(p: Protection): Promise<{ serialFrom: number }> {
    return this.operate(p, 'start', {}) as Promise<{ serialFrom: number }>;
  }

  /** The source site checks its VM against its own config's health checks: `_health` is this side's copy. */
  waitHealthy(p: Protection, _health: HealthSpec, serialFrom: number, signal?: AbortSignal): Promise<SourceHealth> {
    return this.operate(p, 'health', { serialFrom }, { signal }) as Promise<SourceHealth>;
  }

  /** One request for all the protections asked: the source site answers from its own hypervisor (over the kept connection, when kept). */
  heartbeat(asks: BeatAsk[], signal?: AbortSignal): Promise<SourceBeat> {
    const body = { protections: asks.map((a) => ({ name: a.protection.name, agent: a.agent })) };
    const beat = (client: PeerClient) => client.json('POST', SOURCE_SITE_HEARTBEAT, body, signal ? { signal } : {}) as Promise<SourceBeat>;
    return this.peers ? this.kept(this.peers, beat) : this.call(beat);
  }

  /**
   * One held answer of the source site's endpoint: a line per notice of its hypervisor, until
   * `signal` aborts. Over the watch's kept clients only (a held answer per call otherwise would
   * need its own connection each time).
   */
  async notices(protections: Protection[], onNotice: (notice: SourceNotice) => void, signal: AbortSignal): Promise<boolean> {
    if (!this.peers) return false;
    const client = await this.peers.client(this.site, 'notices');
    const body = { protections: protections.map((p) => p.name) };
    try {
      const ended = () => new SourceSiteUnreachable(this.site, client.url, 'its notices ended before their result');
      return ((await resultOf(client.ndjson('POST', SOURCE_SITE_NOTICES, { json: body, signal }), undefined, ended, (n) => onNotice(n as SourceNotice))) as { events: boolean }).events;
    } catch (err) {
      if (signal.aborted) return true;
      if (err instanceof VmdrError && err.code === 'PEER_UNTRUSTED') this.peers.forget(this.site);
      throw this.translate(err, client.url);
    }
  }

  private ask(p: Protection, what: string): Promise<unknown> {
    return this.call((client) => client.json('GET', this.path(p, what)));
  }

  /** A long operation: NDJSON progress lines, then one result or error line. */
  private operate(p: Protection, op: string, body: unknown, options: { signal?: AbortSignal; onProgress?: (progress: Progress) => void } = {}): Promise<unknown> {
    return this.call((client) =>
      resultOf(client.ndjson('POST', this.path(p, op), { json: body, ...(options.signal ? { signal: options.signal } : {}) }), options.onProgress, () =>
        new SourceSiteUnreachable(this.site, client.url, `its answer to ${op} ended before its result`),
      ),
    );
  }

  private path(p: Protection, op: string): string {
    return `${SOURCE_SITE_PREFIX}/${encodeURIComponent(p.name)}/${op}`;
  }

  /** The one transport to the source site: its endpoint, this site's certificate, the source's pinned. */
  private async call<T>(work: (client: PeerClient) => Promise<T>): Promise<T> {
    const client = await connectPeer(this.config, this.file, this.site, { idleTimeoutMs: IDLE_MS });
    try {
      return await work(client);
    } catch (err) {
      throw this.translate(err, client.url);
    } finally {
      client.close();
    }
  }

  /** Over the site's kept client, left open; one that fails the pin check is dropped (the site may have been re-paired). */
  private async kept<T>(peers: KeptPeers, work: (client: PeerClient) => Promise<T>): Promise<T> {
    const client = await peers.client(this.site);
    try {
      return await work(client);
    } catch (err) {
      if (err instanceof VmdrError && err.code === 'PEER_UNTRUSTED') peers.forget(this.site);
      throw this.translate(err, client.url);
    }
  }

  private translate(err: unknown, url: string): unknown {
    if (err instanceof VmdrError && err.code === 'PEER_UNREACHABLE') return new SourceSiteUnreachable(this.site, url, (err.cause as Error | undefined)?.message ?? err.message, err);
    if (err instanceof VmdrError || (err as Error).name === 'AbortError') return err;
    // The answer broke off mid-way (the site's daemon died while it stopped the VM, say).
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ETIMEDOUT' || code === 'ECONNABORTED') {
      return new SourceSiteUnreachable(this.site, url, (err as Error).message, err);
    }
    return err;
  }
}
