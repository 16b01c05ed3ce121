/**
 * The CLI's client of a running daemon's API (`--server URL`): a bearer token from the environment
 * or a file (never argv), and trust in exactly the daemon's certificate when its fingerprint is
 * given (`--server-fingerprint`, as `vmdr serve` prints it) — the certificate is fetched in a
 * handshake that sends nothing, compared, and then the only one trusted, so the token goes to no
 * other — or else the system's CAs (a daemon behind a certificate of a public CA).
 * Answers that are errors become the daemon's own errors, same code, so the CLI prints and exits
 * as if it had done the work itself.
 */
import { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import { connect, type PeerCertificate } from 'node:tls';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';
import { readAll, rebuildError } from '../sites/ndjson.js';
import { normalFingerprint } from '../sites/identity.js';
import type { OperationEvent } from './operations.js';

export interface ServerAddress {
  url: string;
  /** SHA256:AA:BB:… of the daemon's certificate; absent: the system's CAs decide. */
  fingerprint?: string;
  token: string;
}

/** An answer or one event larger than this is no answer of vmdr. */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
const MAX_EVENT_BYTES = 1024 * 1024;
/** How long the daemon may send nothing (an event stream has a heartbeat every 15 s). */
const IDLE_MS = 60_000;

export class ServerUnreachable extends VmdrError {
  constructor(url: string, detail: string, cause?: unknown) {
    super('SERVER_UNREACHABLE', `vmdr serve at ${url} ${detail}`, { subject: { host: url }, cause, remedy: 'is `vmdr serve` running there with `api:` in its config?' });
  }
}

export class ServerUntrusted extends VmdrError {
  constructor(url: string, detail: string) {
    super('SERVER_UNTRUSTED', `vmdr serve at ${url} ${detail}`, { subject: { host: url }, remedy: 'check --server-fingerprint against what `vmdr serve` printed' });
  }
}

export class ApiClient {
  private agent: Promise<Agent> | undefined;

  constructor(private readonly server: ServerAddress) {}

  get url(): string {
    return this.server.url;
  }

  async get<T>(path: string): Promise<T> {
    return this.parse<T>(await this.request('GET', path));
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    return this.parse<T>(await this.request('POST', path, body));
  }

  /** Follows an operation's events to its end: its result, or its error rebuilt. */
  async follow<T>(path: string, onProgress?: (p: Progress) => void): Promise<T> {
    const res = await this.request('GET', path);
    let buffer = '';
    for await (const chunk of res.setEncoding('utf8')) {
      buffer += chunk as string;
      if (buffer.length > MAX_EVENT_BYTES) throw new ServerUnreachable(this.server.url, `sent an event over ${MAX_EVENT_BYTES} bytes`);
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split('\n').find((l) => l.startsWith('data: '));
        if (!data) continue;
        const event = JSON.parse(data.slice('data: '.length)) as OperationEvent;
        if (event.event === 'progress') onProgress?.(event.progress);
        else if (event.event === 'succeeded') return event.result as T;
        else {
          // A failed run's report rides with its error (a failover's: the steps it got to).
          const { report, ...error } = event.error;
          throw Object.assign(rebuildError(error, true), report === undefined ? {} : { report });
        }
      }
    }
    throw new ServerUnreachable(this.server.url, 'ended the operation\'s events before its end');
  }

  close(): void {
    void this.agent?.then((a) => a.destroy());
  }

  private async parse<T>(res: IncomingMessage): Promise<T> {
    const text = (await readAll(res, MAX_ANSWER_BYTES)).toString('utf8');
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new ServerUnreachable(this.server.url, 'answered with something that is not JSON', err);
    }
  }

  /** A 2xx response to read; any other status becomes the daemon's error. */
  private async request(method: string, path: string, body?: unknown): Promise<IncomingMessage> {
    const agent = await (this.agent ??= this.makeAgent());
    const url = new URL(path, this.server.url);
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(url, {
        method,
        agent,
        timeout: IDLE_MS,
        headers: { authorization: `Bearer ${this.server.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error(`sent nothing for ${IDLE_MS / 1000} s`), { code: 'ETIMEDOUT' })));
      req.on('response', resolve);
      req.on('error', (err: NodeJS.ErrnoException) => reject(this.failure(err)));
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
    if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) return res;
    const answer = await this.parse<{ error?: { code: unknown; message: unknown } }>(res).catch(() => undefined);
    if (answer?.error) throw rebuildError(answer.error, (res.statusCode ?? 500) < 500);
    throw new ServerUnreachable(this.server.url, `answered ${res.statusCode} without an error`);
  }

  private failure(err: NodeJS.ErrnoException): VmdrError {
    if (err instanceof VmdrError) return err;
    if (err.code === PIN_MISMATCH || /CERT|SELF_SIGNED|UNABLE_TO/.test(err.code ?? '')) return new ServerUntrusted(this.server.url, `is not trusted: ${err.message}`);
    return new ServerUnreachable(this.server.url, `cannot be reached: ${err.message}`, err);
  }

  /**
   * With a fingerprint: one handshake that sends nothing fetches the daemon's certificate; when it
   * is the one named, it becomes the only CA of the agent, and each connection is checked again.
   */
  private async makeAgent(): Promise<Agent> {
    const pinned = this.server.fingerprint ? normalFingerprint(this.server.fingerprint) : undefined;
    if (!pinned) return new Agent({ keepAlive: true, maxSockets: 4 });
    const cert = await this.fetchCertificate();
    const presented = `SHA256:${new X509Certificate(cert).fingerprint256}`;
    if (presented !== pinned) throw new ServerUntrusted(this.server.url, `presented certificate ${presented}, not ${pinned}`);
    return new Agent({
      keepAlive: true,
      maxSockets: 4,
      ca: cert,
      checkServerIdentity: (_host: string, c: PeerCertificate) =>
        `SHA256:${c.fingerprint256}` === pinned ? undefined : Object.assign(new Error(`it presented SHA256:${c.fingerprint256}, pinned is ${pinned}`), { code: PIN_MISMATCH }),
    });
  }

  private fetchCertificate(): Promise<Buffer> {
    const url = new URL(this.server.url);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 443), rejectUnauthorized: false, timeout: IDLE_MS });
      socket.once('secureConnect', () => {
        const raw = socket.getPeerCertificate().raw;
        socket.end();
        resolve(Buffer.from(`-----BEGIN CERTIFICATE-----\n${raw.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`));
      });
      socket.once('timeout', () => socket.destroy(Object.assign(new Error(`no handshake within ${IDLE_MS / 1000} s`), { code: 'ETIMEDOUT' })));
      socket.once('error', (err: NodeJS.ErrnoException) => reject(this.failure(err)));
    });
  }
}

const PIN_MISMATCH = 'ERR_SERVER_CERT_NOT_PINNED';
