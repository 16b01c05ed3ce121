/**
 * Requests to a peer site's endpoint over mutual TLS: this site presents its own certificate and
 * key, and trusts exactly one certificate, the one pinned for the site it calls (compared by
 * SHA-256 fingerprint; no CA, no host name, so the endpoint may be reached by any address). One
 * request layer for every caller: the replication sender, the failover's calls to the source
 * site, failback. Failures become errors by Node's codes: PEER_UNREACHABLE, PEER_UNTRUSTED, or the
 * peer's own refusal with its code.
 */
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Agent, request, type AgentOptions } from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { PeerCertificate } from 'node:tls';
import { VmdrError } from '../../hypervisors/errors.js';
import { PeerUnreachable, PeerUntrusted } from './errors.js';
import { readAll, readLines, rebuildError } from './ndjson.js';

export { readAll };

/** The request header in which a caller says what its clock reads as it sends. */
export const CLOCK_HEADER = 'x-vmdr-clock';

/** What one site needs to call another: its own certificate and key, and the peer's pinned certificate. */
export interface PeerCredentials {
  cert: Buffer;
  key: Buffer;
  pinned: Buffer;
}

export interface PeerRequest {
  /** Sent as application/json. */
  json?: unknown;
  /** A streamed body of `type`. */
  body?: Readable;
  type?: string;
  signal?: AbortSignal;
  /** How long the request may see no byte from the peer (default: the client's). */
  idleTimeoutMs?: number;
  /** Called with the status of each interim answer (1xx) the peer sends before its answer. */
  onInformation?: (status: number) => void;
}

/** A JSON answer or one NDJSON line larger than this is no answer of a peer. */
export const MAX_ANSWER_BYTES = 16 * 1024 * 1024;
const MAX_LINE_BYTES = 1024 * 1024;

/** Socket failures (Node's codes): the peer is down, away, or cut the connection. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);
/** TLS verification failures (OpenSSL's codes, as Node reports them), and our own pin check: not the pinned certificate. */
const PIN_MISMATCH = 'ERR_PEER_CERT_NOT_PINNED';
const UNTRUSTED_CODES = new Set([
  PIN_MISMATCH,
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

/** Of those, the ones about the certificate's dates, judged by this host's clock. */
const CLOCK_CODES = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);

export interface PeerClientOptions {
  idleTimeoutMs?: number;
  agent?: Pick<AgentOptions, 'maxSockets' | 'maxFreeSockets' | 'keepAliveMsecs' | 'timeout'>;
}

export class PeerClient {
  private readonly agent: Agent;
  private readonly idleTimeoutMs: number;

  constructor(
    readonly url: string,
    readonly site: string,
    credentials: PeerCredentials,
    /** How long a request may see no byte from the peer (default 2 min); `agent`: how its connections are kept (default: up to 4, kept while in use). */
    options: PeerClientOptions = {},
  ) {
    const pinned = `SHA256:${new X509Certificate(credentials.pinned).fingerprint256}`;
    this.agent = new Agent({
      cert: credentials.cert,
      key: credentials.key,
      // The pinned certificate is self-signed: as the only CA it proves the peer holds its key...
      ca: credentials.pinned,
      // ...and the fingerprint makes it that very certificate; the host name does not matter.
      checkServerIdentity: (_host: string, cert: PeerCertificate) =>
        `SHA256:${cert.fingerprint256}` === pinned
          ? undefined
          : Object.assign(new Error(`it presented ${`SHA256:${cert.fingerprint256}`}, pinned is ${pinned}`), { code: PIN_MISMATCH }),
      keepAlive: true,
      maxSockets: 4,
      ...options.agent,
    });
    this.idleTimeoutMs = options.idleTimeoutMs ?? 120_000;
  }

  /** A JSON request (or none) with a JSON answer. */
  async json(method: string, path: string, body?: unknown, options: Omit<PeerRequest, 'json' | 'body' | 'type'> = {}): Promise<unknown> {
    const res = await this.request(method, path, { ...options, ...(body === undefined ? {} : { json: body }) });
    return this.parse((await readAll(res, MAX_ANSWER_BYTES)).toString('utf8'));
  }

  /** The answer's lines, each parsed as JSON, as they arrive (progress, then a result). */
  async *ndjson(method: string, path: string, options: PeerRequest = {}): AsyncGenerator<unknown> {
    yield* readLines(await this.request(method, path, options), MAX_LINE_BYTES, (what, cause) => this.invalid(`sent ${what}`, cause));
  }

  private parse(text: string): unknown {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw this.invalid('answered with something that is not JSON', err);
    }
  }

  private invalid(what: string, cause?: unknown): VmdrError {
    return new VmdrError('PEER_ANSWER_INVALID', `site "${this.site}" at ${this.url} ${what}`, { subject: { host: this.url, site: this.site }, cause, userError: false });
  }

  /**
   * Resolves with a 2xx response (to be read by the caller); anything else becomes the peer's own
   * error (same code). A socket silent for the idle timeout fails as unreachable: a link cut
   * without a FIN must not hang a caller forever.
   */
  request(method: string, path: string, options: PeerRequest = {}): Promise<IncomingMessage> {
    const url = new URL(path, this.url);
    const idleMs = options.idleTimeoutMs ?? this.idleTimeoutMs;
    const body = options.json !== undefined ? Readable.from([Buffer.from(JSON.stringify(options.json))]) : options.body;
    const type = options.json !== undefined ? 'application/json' : options.type;
    return new Promise((resolve, reject) => {
      const req = request(url, {
        method,
        agent: this.agent,
        signal: options.signal,
        timeout: idleMs,
        // The caller's clock: a receiver puts a point's time on its own clock with it (limits.ts).
        headers: { ...(type ? { 'content-type': type } : {}), [CLOCK_HEADER]: new Date().toISOString() },
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer for ${idleMs / 1000} s`), { code: 'ETIMEDOUT' })));
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        reject(this.translate(err));
      };
      req.on('error', fail);
      if (options.onInformation) req.on('information', (info) => options.onInformation!(info.statusCode));
      req.on('response', (res) => {
        if (res.statusCode && res.statusCode < 300) {
          settled = true;
          return resolve(res);
        }
        readAll(res, 64 * 1024).then((buf) => fail(peerError(res.statusCode ?? 0, buf, this.url, this.site)), fail);
      });
      if (!body) return void req.end();
      // The peer may answer (refuse) before the body is all sent; its answer is the error to report.
      pipeline(body, req).catch((err: unknown) => setTimeout(() => fail(err), 50));
    });
  }

  close(): void {
    this.agent.destroy();
  }

  private translate(err: unknown): unknown {
    if (err instanceof VmdrError || (err as Error).name === 'AbortError') return err;
    const code = (err as NodeJS.ErrnoException).code ?? '';
    // Node's own codes decide ("socket hang up" is ECONNRESET); its words are only reported.
    if (UNREACHABLE_CODES.has(code)) return new PeerUnreachable(this.url, this.site, (err as Error).message, err);
    if (UNTRUSTED_CODES.has(code)) return new PeerUntrusted(this.url, this.site, (err as Error).message, err, CLOCK_CODES.has(code));
    return err;
  }
}

function peerError(status: number, body: Buffer, url: string, site: string): VmdrError {
  try {
    const { error } = JSON.parse(body.toString('utf8')) as { error: { code: string; message: string; [k: string]: unknown } };
    return rebuildError(error, status < 500);
  } catch {
    return new VmdrError('PEER_FAILED', `site "${site}" at ${url} answered ${status}: ${body.toString('utf8').slice(0, 200)}`, { subject: { host: url, site }, userError: false });
  }
}
