/**
 * The source site's side of the DR site's receiver routes, over the peer client (mutual TLS: this
 * site's certificate presented, the DR site's pinned). A cycle's body is a generator piped into
 * the request, so NBD reads on the source are paced by the network.
 */
import { Readable } from 'node:stream';
import { ProtectionFailedOver } from '../replica/errors.js';
import type { RecoveryPoint, ReplicaSpace } from '../replica/store.js';
import type { RecordedSource } from '../../protections/source-identity.js';
import { MAX_ANSWER_BYTES, PeerClient, readAll, type PeerCredentials } from '../../sites/peer-client.js';
import { DELTA_STREAM_TYPE, STREAM_PREFIX_BYTES } from '../stream/format.js';
import type { Pacer } from '../bandwidth/gate.js';

type WirePoint = Omit<RecoveryPoint, 'time' | 'committedAt'> & { time: string; committedAt: string };
const toPoint = (p: WirePoint): RecoveryPoint => ({ ...p, time: new Date(p.time), committedAt: new Date(p.committedAt) });

export class ReceiverClient {
  private readonly peer: PeerClient;
  private readonly pacer: Pacer | undefined;

  constructor(
    readonly url: string,
    readonly site: string,
    credentials: PeerCredentials,
    /** How long a request may see no byte from the receiver (default 2 min; hashes get 30). */
    options: { idleTimeoutMs?: number; pacer?: Pacer } = {},
  ) {
    const { pacer, ...peer } = options;
    this.peer = new PeerClient(url, site, credentials, peer);
    this.pacer = pacer;
  }

  /** The bandwidth limit a cycle sent now is held to (bytes/s), or undefined when there is none. */
  limit(): number | undefined {
    const rate = this.pacer?.limit();
    return rate !== undefined && Number.isFinite(rate) ? rate : undefined;
  }

  async latestPoint(protection: string): Promise<RecoveryPoint | undefined> {
    const body = await this.latest(protection);
    if (body.role === 'failed-over') throw new ProtectionFailedOver(protection, body.failover ?? null);
    return body.point ? toPoint(body.point) : undefined;
  }

  /** Whether the protection is failed over, as the DR site says now (the same answer the newest point comes with). */
  async role(protection: string, signal?: AbortSignal): Promise<{ role: 'replicating' | 'failed-over'; failover: string | null }> {
    const body = await this.latest(protection, signal);
    return body.role === 'failed-over' ? { role: 'failed-over', failover: body.failover ?? null } : { role: 'replicating', failover: null };
  }

  private async latest(protection: string, signal?: AbortSignal): Promise<{ point: WirePoint | null; role?: string; failover?: string | null }> {
    return (await this.json('GET', `/v1/protections/${encodeURIComponent(protection)}/points/latest`, undefined, signal)) as {
      point: WirePoint | null;
      role?: string;
      failover?: string | null;
    };
  }

  async listPoints(protection: string): Promise<RecoveryPoint[]> {
    return (await this.pointsAndSpace(protection)).points;
  }

  /** The points and what the replica occupies (null from a receiver older than retention tiers). */
  async pointsAndSpace(protection: string): Promise<{ points: RecoveryPoint[]; space: ReplicaSpace | null }> {
    const body = (await this.json('GET', `/v1/protections/${encodeURIComponent(protection)}/points`)) as { points: WirePoint[]; space?: ReplicaSpace };
    return { points: body.points.map(toPoint), space: body.space ?? null };
  }

  /** The identity of the source VM the protection's points are of, as the DR site recorded it. */
  async recordedSource(protection: string): Promise<RecordedSource | undefined> {
    const body = (await this.json('GET', `/v1/protections/${encodeURIComponent(protection)}/source`)) as { source: RecordedSource | null };
    return body.source ?? undefined;
  }

  /**
   * Records `vm` as the protection's source. Without `replace`, another identity already recorded
   * wins (outcome 'conflict'); with it, the new one takes over and every existing point is kept for the old.
   */
  async recordSource(
    protection: string,
    vm: { uuid: string; vm: string },
    replace = false,
  ): Promise<{ outcome: 'recorded' | 'unchanged' | 'conflict' | 'replaced'; source: RecordedSource; previous: RecordedSource | null; kept: string[] }> {
    return (await this.json('PUT', `/v1/protections/${encodeURIComponent(protection)}/source`, { ...vm, replace })) as Awaited<ReturnType<ReceiverClient['recordSource']>>;
  }

  /** Ends the keeping of points of a replaced source VM; answers the ids released. */
  async releasePoints(protection: string, points: string[] | 'replaced'): Promise<string[]> {
    return ((await this.json('POST', `/v1/protections/${encodeURIComponent(protection)}/points/release`, { points })) as { released: string[] }).released;
  }

  /** The replica's block hashes of one disk at one point (empty when the point lacks that disk). */
  async hashes(protection: string, point: string, disk: string, blockSize: number, signal?: AbortSignal): Promise<Buffer> {
    const res = await this.peer.request('POST', `/v1/protections/${encodeURIComponent(protection)}/hashes`, {
      json: { point, disk, blockSize },
      signal,
      // The receiver reads the whole disk before it answers: silence is expected for a while.
      idleTimeoutMs: 30 * 60_000,
    });
    // As long as the disk is (32 bytes a block, the length said up front): a pinned peer's answer.
    return readAll(res, Number.MAX_SAFE_INTEGER);
  }

  /**
   * Ships one cycle; resolves with the recovery point the receiver committed (its acknowledgement).
   * The stream's header goes first, alone: the frames follow once the receiver has taken it (its
   * first 102 Processing). A refusal of the header (its tenant's quota, a wrong base) then arrives
   * as the receiver's answer while nothing else is on its way, instead of as a connection cut under
   * frames already sent, and the cycle ships nothing. Under a bandwidth limit the body is let out
   * at the limit (bandwidth/gate.ts): the stream, and the NBD reads behind it, wait on the limiter.
   */
  async sendCycle(protection: string, body: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<RecoveryPoint> {
    // Without any limit configured, the body goes as it always did: no pacing, a deep run-ahead.
    const pacer = this.pacer?.configured() ? this.pacer : undefined;
    let admit!: () => void;
    const admitted = new Promise<void>((resolve) => (admit = resolve));
    const res = await this.peer
      .request('POST', `/v1/protections/${encodeURIComponent(protection)}/cycles`, {
        type: DELTA_STREAM_TYPE,
        // Run ahead of the socket by a few frames, so a slow moment on one side does not stall the
        // other; under a limit by little: what waits here during a stall of the link would go out
        // at the link's speed after it, past the limit.
        body: Readable.from(headerFirst(pacer ? pacer.pace(body, signal) : body, admitted), {
          objectMode: false,
          highWaterMark: pacer ? 256 * 1024 : 16 * 1024 * 1024,
        }),
        onInformation: (status) => status === 102 && admit(),
        signal,
      })
      // Refused or failed: the body is given up, and must not wait for an admission that never comes.
      .finally(admit);
    return toPoint((JSON.parse((await readAll(res, MAX_ANSWER_BYTES)).toString('utf8')) as { point: WirePoint }).point);
  }

  close(): void {
    this.peer.close();
  }

  private json(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    return this.peer.json(method, path, body, signal ? { signal } : {});
  }
}

/** The body up to the end of the stream header (its length is in the prefix), then the rest once `go` resolves. */
async function* headerFirst(body: AsyncIterable<Buffer>, go: Promise<void>): AsyncGenerator<Buffer> {
  let prefix = Buffer.alloc(0);
  let sent = 0;
  let waited = false;
  for await (const chunk of body) {
    yield chunk;
    if (waited) continue;
    if (prefix.length < STREAM_PREFIX_BYTES) prefix = Buffer.concat([prefix, chunk.subarray(0, STREAM_PREFIX_BYTES - prefix.length)]);
    sent += chunk.length;
    // Prefix, header JSON, its CRC (docs/delta-stream.md).
    if (prefix.length === STREAM_PREFIX_BYTES && sent >= STREAM_PREFIX_BYTES + prefix.readUInt32BE(12) + 4) {
      waited = true;
      await go;
    }
  }
}
