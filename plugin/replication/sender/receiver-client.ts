/**
 * The source host's side of the receiver's HTTPS API. The receiver's certificate is pinned (it is
 * the only CA trusted for this connection) and the token rides in every request. A cycle's body is
 * a generator piped into the request, so NBD reads on the source are paced by the network.
 */
import { request, Agent } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { VmdrError } from '../../../hypervisors/errors.js';
import { ProtectionFailedOver } from '../replica/errors.js';
import type { RecoveryPoint } from '../replica/store.js';
import type { RecordedSource } from '../../protections/source-identity.js';
import { DELTA_STREAM_TYPE } from '../stream/format.js';

export class ReceiverUnreachable extends VmdrError {
  constructor(url: string, site: string, detail: string, cause?: unknown) {
    super('RECEIVER_UNREACHABLE', `cannot reach the receiver of site "${site}" at ${url}: ${detail}`, {
      subject: { host: url, site },
      cause,
      remedy: `is \`vmdr serve\` running on site "${site}"?`,
    });
  }
}

type WirePoint = Omit<RecoveryPoint, 'time' | 'committedAt'> & { time: string; committedAt: string };
const toPoint = (p: WirePoint): RecoveryPoint => ({ ...p, time: new Date(p.time), committedAt: new Date(p.committedAt) });

/** Socket failures (Node's codes): the receiver is down, away, or cut the connection. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);
/** TLS verification failures (OpenSSL's codes, as Node reports them): not the certificate pinned. */
const UNTRUSTED_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

export class ReceiverClient {
  private readonly agent: Agent;
  private readonly token: string;

  private readonly idleTimeoutMs: number;

  constructor(
    readonly url: string,
    readonly site: string,
    credentials: { cert: Buffer; token: string },
    /** How long a request may see no byte from the receiver (default 2 min; hashes get 30). */
    options: { idleTimeoutMs?: number } = {},
  ) {
    this.agent = new Agent({ ca: credentials.cert, keepAlive: true, maxSockets: 4 });
    this.token = credentials.token;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 120_000;
  }

  async latestPoint(protection: string): Promise<RecoveryPoint | undefined> {
    const body = (await this.json('GET', `/v1/protections/${encodeURIComponent(protection)}/points/latest`)) as {
      point: WirePoint | null;
      role?: string;
      failover?: string | null;
    };
    if (body.role === 'failed-over') throw new ProtectionFailedOver(protection, body.failover ?? null);
    return body.point ? toPoint(body.point) : undefined;
  }

  async listPoints(protection: string): Promise<RecoveryPoint[]> {
    const body = (await this.json('GET', `/v1/protections/${encodeURIComponent(protection)}/points`)) as { points: WirePoint[] };
    return body.points.map(toPoint);
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
    const res = await this.send('POST', `/v1/protections/${encodeURIComponent(protection)}/hashes`, {
      type: 'application/json',
      body: Readable.from([Buffer.from(JSON.stringify({ point, disk, blockSize }))]),
      signal,
      // The receiver reads the whole disk before it answers: silence is expected for a while.
      idleTimeoutMs: 30 * 60_000,
    });
    return readAll(res);
  }

  /** Ships one cycle; resolves with the recovery point the receiver committed (its acknowledgement). */
  async sendCycle(protection: string, body: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<RecoveryPoint> {
    const res = await this.send('POST', `/v1/protections/${encodeURIComponent(protection)}/cycles`, {
      type: DELTA_STREAM_TYPE,
      // Run ahead of the socket by a few frames, so a slow moment on one side does not stall the other.
      body: Readable.from(body, { objectMode: false, highWaterMark: 16 * 1024 * 1024 }),
      signal,
    });
    return toPoint((JSON.parse((await readAll(res)).toString('utf8')) as { point: WirePoint }).point);
  }

  close(): void {
    this.agent.destroy();
  }

  private async json(method: string, path: string, body?: unknown): Promise<unknown> {
    const options = body === undefined ? {} : { type: 'application/json', body: Readable.from([Buffer.from(JSON.stringify(body))]) };
    return JSON.parse((await readAll(await this.send(method, path, options))).toString('utf8'));
  }

  /**
   * Resolves with a 2xx response; anything else becomes the receiver's own error (same code). A
   * socket silent for the idle timeout (the receiver commits within seconds of the last byte)
   * fails as unreachable: a link cut without a FIN must not hang a sync forever.
   */
  private send(
    method: string,
    path: string,
    options: { type?: string; body?: Readable; signal?: AbortSignal; idleTimeoutMs?: number },
  ): Promise<IncomingMessage> {
    const url = new URL(path, this.url);
    return new Promise((resolve, reject) => {
      const req = request(url, {
        method,
        agent: this.agent,
        signal: options.signal,
        timeout: options.idleTimeoutMs ?? this.idleTimeoutMs,
        headers: { authorization: `Bearer ${this.token}`, ...(options.type ? { 'content-type': options.type } : {}) },
      });
      req.on('timeout', () =>
        req.destroy(Object.assign(new Error(`no answer for ${(options.idleTimeoutMs ?? this.idleTimeoutMs) / 1000} s`), { code: 'ETIMEDOUT' })),
      );
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        reject(this.translate(err));
      };
      req.on('error', fail);
      req.on('response', (res) => {
        if (res.statusCode && res.statusCode < 300) {
          settled = true;
          return resolve(res);
        }
        readAll(res).then((buf) => fail(remoteError(res.statusCode ?? 0, buf, this.url)), fail);
      });
      if (!options.body) return void req.end();
      // The receiver may answer (refuse) before the body is all sent; its answer is the error to report.
      pipeline(options.body, req).catch((err: unknown) => setTimeout(() => fail(err), 50));
    });
  }

  private translate(err: unknown): unknown {
    if (err instanceof VmdrError || (err as Error).name === 'AbortError') return err;
    const code = (err as NodeJS.ErrnoException).code ?? '';
    // Node's own codes decide ("socket hang up" is ECONNRESET); its words are only reported.
    if (UNREACHABLE_CODES.has(code)) return new ReceiverUnreachable(this.url, this.site, (err as Error).message, err);
    if (UNTRUSTED_CODES.has(code)) {
      return new VmdrError('RECEIVER_UNTRUSTED', `the receiver at ${this.url} did not present the pinned certificate: ${(err as Error).message}`, {
        subject: { host: this.url },
        cause: err,
        remedy: "copy the DR site's tls.crt to this host",
      });
    }
    return err;
  }
}

function remoteError(status: number, body: Buffer, url: string): VmdrError {
  try {
    const { error } = JSON.parse(body.toString('utf8')) as { error: { code: string; message: string; [k: string]: unknown } };
    const { code, message, remedy, ...subject } = error;
    return new VmdrError(code, message, {
      subject: subject as Record<string, string>,
      ...(typeof remedy === 'string' ? { remedy } : {}),
      userError: status < 500,
    });
  } catch {
    return new VmdrError('RECEIVER_FAILED', `receiver at ${url} answered ${status}: ${body.toString('utf8').slice(0, 200)}`, { subject: { host: url }, userError: false });
  }
}

async function readAll(res: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
