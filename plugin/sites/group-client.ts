/**
 * A consistency group's members on another source site, driven by the group's coordinating site
 * through that site's endpoint (group-protocol.ts): its `vmdr serve` runs their cycles, holds and
 * releases their VMs, and ships them to the DR site; this side only asks and waits.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';
import type { Config, ConsistencyGroup, Protection } from '../config/schema.js';
import { errorOf, type GroupHost, type MemberDown, type MemberOutcome } from '../replication/group-host.js';
import type { SyncResult } from '../replication/sync.js';
import { SourceSiteUnreachable } from './errors.js';
import { groupStepPath, type GroupDownAnswer, type GroupHoldAnswer, type GroupReleaseAnswer, type GroupStep } from './group-protocol.js';
import { resultOf } from './ndjson.js';
import type { PeerClient } from './peer-client.js';
import { connectPeer } from './peer-connect.js';

/** The held join answer carries a line at least every 15 s: this much silence is a lost site. */
const JOIN_IDLE_MS = 60_000;
/** A step's answer beyond the group's pauseTimeout: the site has ended its hold by itself by then. */
const STEP_MARGIN_MS = 5_000;

export class RemoteHostMembers implements GroupHost {
  #client: Promise<PeerClient> | undefined;
  readonly #join = new AbortController();
  #joined: Promise<MemberOutcome[]> | undefined;
  #aborted: Error | undefined;

  constructor(
    readonly group: ConsistencyGroup,
    readonly site: string,
    readonly members: readonly Protection[],
    private readonly deps: { config: Config; file: string },
    private readonly instant: string,
    private readonly options: { signal?: AbortSignal; onProgress?: (p: Progress) => void } = {},
  ) {}

  async down(): Promise<MemberDown[]> {
    try {
      return ((await this.step('down', { members: this.names() })) as GroupDownAnswer).down.map((d) => ({ ...d, why: `${d.why} on site "${this.site}"` }));
    } catch (err) {
      // Not answering is down too: the cycle waits for the site or fails, as for a VM that is off.
      return this.members.map((p) => ({ protection: p.name, why: `site "${this.site}" (its host) did not answer: ${(err as Error).message}` }));
    }
  }

  arrive(): Promise<void> {
    let arrived!: () => void;
    const whenArrived = new Promise<void>((resolve) => (arrived = resolve));
    this.#joined ??= this.client().then(async (client) => {
      const lines = client.ndjson('POST', groupStepPath(this.group.name, 'join'), {
        json: { instant: this.instant, members: this.names() },
        signal: this.options.signal ? AbortSignal.any([this.#join.signal, this.options.signal]) : this.#join.signal,
        idleTimeoutMs: JOIN_IDLE_MS,
      });
      const ended = () => new SourceSiteUnreachable(this.site, client.url, 'its answer to the group cycle ended before its result');
      const { members } = await resultOf<{ members: MemberOutcome[] }>(lines, this.options.onProgress, ended, (n) => (n as { arrived?: boolean }).arrived && arrived());
      return members.map(revived);
    });
    const joined = this.#joined.catch((err: unknown) => {
      throw this.#aborted ?? this.translate(err);
    });
    // Before the arrival, a failure is the arrival's; after it, the members' outcomes (outcomes()).
    joined.catch(() => undefined);
    return Promise.race([whenArrived, joined.then(() => undefined)]);
  }

  async hold(): Promise<MemberDown[]> {
    return ((await this.step('hold', { instant: this.instant }, this.group.pauseTimeout + STEP_MARGIN_MS)) as GroupHoldAnswer).notHeld.map((d) => ({ ...d, why: `${d.why} on site "${this.site}"` }));
  }

  async begin(): Promise<void> {
    await this.step('begin', { instant: this.instant }, this.group.pauseTimeout + STEP_MARGIN_MS);
  }

  async release(): Promise<string[]> {
    // Let go already: the site resumed its members when the join's connection closed.
    if (this.#aborted) return [];
    return ((await this.step('release', { instant: this.instant }, this.group.pauseTimeout + STEP_MARGIN_MS)) as GroupReleaseAnswer).warnings.map((w) => `site "${this.site}": ${w}`);
  }

  /** Closing the join's connection is the signal: the site lets its members go and ends its hold. */
  abort(why: Error): void {
    this.#aborted ??= why;
    this.#join.abort(why);
  }

  async outcomes(): Promise<MemberOutcome[]> {
    const failed = (err: unknown) => this.members.map((p) => ({ protection: p.name, error: errorOf(this.#aborted ?? this.translate(err)) }));
    if (!this.#joined) return failed(new VmdrError('GROUP_WINDOW_ABORTED', 'never joined'));
    return this.#joined.catch(failed);
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    (await client?.catch(() => undefined))?.close();
  }

  private names(): string[] {
    return this.members.map((p) => p.name);
  }

  private client(): Promise<PeerClient> {
    this.#client ??= connectPeer(this.deps.config, this.deps.file, this.site, { idleTimeoutMs: JOIN_IDLE_MS });
    return this.#client;
  }

  private async step(step: GroupStep, body: unknown, idleTimeoutMs?: number): Promise<unknown> {
    const client = await this.client();
    try {
      return await client.json('POST', groupStepPath(this.group.name, step), body, idleTimeoutMs ? { idleTimeoutMs } : {});
    } catch (err) {
      throw this.translate(err);
    }
  }

  private translate(err: unknown): unknown {
    if (err instanceof VmdrError && err.code === 'PEER_UNREACHABLE') return new SourceSiteUnreachable(this.site, (err.subject as { host?: string }).host ?? this.site, (err.cause as Error | undefined)?.message ?? err.message, err);
    return err;
  }
}

/** A member's outcome as JSON carried it: its point's times are dates again. */
function revived(o: MemberOutcome): MemberOutcome {
  if (!o.result) return o;
  const point = o.result.point as unknown as SyncResult['point'] & { time: string | Date; committedAt: string | Date };
  return { ...o, result: { ...o.result, point: { ...point, time: new Date(point.time), committedAt: new Date(point.committedAt) } } };
}
