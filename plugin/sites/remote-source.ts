/**
 * The source site asked through its endpoint (`vmdr serve` there), from the DR site: this host
 * never reaches the source's hypervisor. Every answer is the source site's own, its errors
 * rebuilt with their code; a site that does not answer, or whose answer breaks off, is
 * SOURCE_SITE_UNREACHABLE.
 */
import type { IncomingMessage } from 'node:http';
import { VmdrError } from '../../hypervisors/errors.js';
import type { PowerState, Progress, StopOptions, VmInfo } from '../../hypervisors/types.js';
import type { Config, HealthSpec, Protection } from '../config/schema.js';
import { endpointClient } from '../replication/sender/connect.js';
import { rebuildError, type ReceiverClient } from '../replication/sender/receiver-client.js';
import { SiteEndpointMissing, SourceSiteUnreachable } from './errors.js';
import { SOURCE_SITE_PREFIX, type FinalSync, type SourceFence, type SourceHealth, type SourceSite, type SourceStop } from './source-site.js';

/** The source site sends a line at least every 15 s while it works: this much silence is a lost site. */
const IDLE_MS = 60_000;
/** A progress or result line is a few hundred bytes. */
const MAX_LINE_BYTES = 64 * 1024;
/** A VM's definition (its disks and NICs) is a few KiB. */
const MAX_ANSWER_BYTES = 1024 * 1024;

type Line = { progress: Progress } | { result: unknown } | { error: { code: string; message: string }; userError?: boolean };

export class RemoteSourceSite implements SourceSite {
  readonly remote = true;

  constructor(
    readonly site: string,
    private readonly config: Config,
    private readonly file: string,
  ) {}

  async powerState(p: Protection): Promise<PowerState> {
    return ((await this.ask('GET', p, 'power')) as { state: PowerState }).state;
  }

  async vm(p: Protection): Promise<VmInfo> {
    return ((await this.ask('GET', p, 'vm')) as { vm: VmInfo }).vm;
  }

  stop(p: Protection, how: Omit<StopOptions, 'signal'>, signal?: AbortSignal): Promise<SourceStop> {
    return this.ask('POST', p, 'stop', { body: how, signal }) as Promise<SourceStop>;
  }

  finalSync(p: Protection, options: { signal?: AbortSignal; onProgress?: (progress: Progress) => void } = {}): Promise<FinalSync> {
    return this.ask('POST', p, 'final-sync', { body: {}, ...options }) as Promise<FinalSync>;
  }

  fence(p: Protection, failover: string): Promise<SourceFence> {
    return this.ask('POST', p, 'fence', { body: { failover } }) as Promise<SourceFence>;
  }

  startSource(p: Protection): Promise<{ serialFrom: number }> {
    return this.ask('POST', p, 'start', { body: {} }) as Promise<{ serialFrom: number }>;
  }

  /** The source site checks its VM against its own config's health checks: `_health` is this side's copy. */
  waitHealthy(p: Protection, _health: HealthSpec, serialFrom: number, signal?: AbortSignal): Promise<SourceHealth> {
    return this.ask('POST', p, 'health', { body: { serialFrom }, signal }) as Promise<SourceHealth>;
  }

  /** One operation: a JSON answer, or NDJSON progress lines ending in one result or error line. */
  private async ask(
    method: 'GET' | 'POST',
    p: Protection,
    op: string,
    options: { body?: unknown; signal?: AbortSignal; onProgress?: (progress: Progress) => void } = {},
  ): Promise<unknown> {
    const client = await this.connect();
    try {
      const res = await client.call(method, `${SOURCE_SITE_PREFIX}/${encodeURIComponent(p.name)}/${op}`, {
        body: options.body,
        signal: options.signal,
        idleTimeoutMs: IDLE_MS,
      });
      if (!String(res.headers['content-type']).startsWith('application/x-ndjson')) return JSON.parse((await readBounded(res, MAX_ANSWER_BYTES)).toString('utf8'));
      for await (const line of ndjson(res)) {
        if ('progress' in line) options.onProgress?.(line.progress);
        else if ('result' in line) return line.result;
        else if ('error' in line) throw rebuildError(line.error, line.userError ?? true);
      }
      throw new SourceSiteUnreachable(this.site, client.url, `its answer to ${op} ended before its result`);
    } catch (err) {
      throw this.translate(err, client.url);
    } finally {
      client.close();
    }
  }

  /** The transport to the source site: its endpoint's pinned certificate and credential. */
  private async connect(): Promise<ReceiverClient> {
    const site = this.config.sites.find((s) => s.name === this.site);
    if (!site?.receiver) throw new SiteEndpointMissing(this.site, this.file);
    return endpointClient(this.config, site, { idleTimeoutMs: IDLE_MS });
  }

  private translate(err: unknown, url: string): unknown {
    if (err instanceof VmdrError && err.code === 'RECEIVER_UNREACHABLE') return new SourceSiteUnreachable(this.site, url, (err.cause as Error)?.message ?? err.message, err);
    if (err instanceof VmdrError || (err as Error).name === 'AbortError') return err;
    // The answer broke off mid-way (the site's daemon died while it stopped the VM, say).
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ETIMEDOUT') return new SourceSiteUnreachable(this.site, url, (err as Error).message, err);
    return err;
  }
}

async function* ndjson(res: IncomingMessage): AsyncGenerator<Line> {
  let pending = '';
  for await (const chunk of res) {
    pending += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim()) yield JSON.parse(line) as Line;
    }
    if (pending.length > MAX_LINE_BYTES) throw new VmdrError('SOURCE_SITE_ANSWER_INVALID', `a line of the source site's answer is longer than ${MAX_LINE_BYTES} bytes`, { userError: false });
  }
}

async function readBounded(res: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    size += (chunk as Buffer).length;
    if (size > max) {
      res.destroy();
      throw new VmdrError('SOURCE_SITE_ANSWER_INVALID', `the source site's answer is longer than ${max} bytes`, { userError: false });
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
