/**
 * One logged-in session with a vCenter or ESXi host over its SOAP API (/sdk): the service content,
 * the session cookie, calls, and logging in again once when the server forgot the session (it
 * expired, or someone terminated it). Every exchange has a deadline and a bounded answer, so a
 * hung or hostile endpoint costs vmdr neither a stuck call nor unbounded memory.
 *
 * The password is read when logging in (endpoint.readPassword), kept in this object's private
 * memory for logging in again, and never logged or put in an error: errors from the HTTP layer are
 * rebuilt without the request (which, for Login, holds the password).
 */
import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import type https from 'node:https';
import type { Readable } from 'node:stream';
import { HypervisorTimedOut, HypervisorUnreachable, VmdrError } from '../errors.js';
import { readPassword, type VsphereEndpoint } from './endpoint.js';
import { VsphereInvalidRequest, VsphereNotAuthenticated, VsphereProtocolError, VsphereResponseTooLarge } from './errors.js';
import { errorOfFault, isNotAuthenticated } from './faults.js';
import { buildRequest, moRef, parseResponse, SoapAnswerMalformed, SoapFault, SoapValueInvalid, type MoRef } from './soap.js';
import { trustingAgent } from './tls-trust.js';

export const DEFAULT_CALL_TIMEOUT_MS = 120_000;
/** No answer of the SOAP API vmdr asks for comes near this; a larger one is cut off. */
export const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
const SESSION_COOKIE = 'vmware_soap_session';

/** The managers and roots of ServiceContent vmdr uses (all of them are present; only these are typed). */
export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  viewManager: MoRef;
  sessionManager: MoRef;
  searchIndex: MoRef;
  taskManager: MoRef;
  fileManager?: MoRef;
  virtualDiskManager?: MoRef;
  customFieldsManager?: MoRef;
  customizationSpecManager?: MoRef;
  eventManager?: MoRef;
  about: { apiVersion: string; apiType: string; version: string; fullName: string; instanceUuid?: string };
  [key: string]: unknown;
}

export interface SessionOptions {
  /** Deadline of one call (connect, request and the whole answer). Default 120 s. */
  callTimeoutMs?: number;
  /** Largest answer accepted. Default 64 MiB. */
  maxResponseBytes?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** The VM the call concerns, by name: errors then name it (InvalidPowerState, VmNotFound). */
  vm?: string;
}

export class VsphereSession {
  /** ServiceContent, read before logging in. */
  content!: ServiceContent;
  /** The logged-in session's key (UserSession.key): what SessionManager lists and can terminate. */
  sessionKey: string | undefined;
  /**
   * For datastore file transfers (/folder/…): the same TLS trust, the session's cookie on every
   * request, baseURL https://host:port. Callers set their own timeouts and stream large bodies.
   */
  readonly transfer: AxiosInstance;

  readonly #agent: https.Agent;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  #password: string | undefined;
  #cookie: string | undefined;
  /** Counts logins: a call that failed on an older session than the current one just repeats. */
  #generation = 0;
  #login: Promise<void> | undefined;
  #apiVersion: string | undefined;

  private constructor(
    readonly endpoint: VsphereEndpoint,
    agent: https.Agent,
    options: SessionOptions,
  ) {
    this.#agent = agent;
    this.#timeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.#maxBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.transfer = axios.create({
      baseURL: `https://${hostForUrl(endpoint.host)}:${endpoint.port}`,
      httpsAgent: agent,
      // Straight to the host: an HTTP(S)_PROXY from the environment must not see the session.
      proxy: false,
      maxRedirects: 0,
      maxContentLength: this.#maxBytes,
    });
    const origin = new URL(this.transfer.defaults.baseURL!).origin;
    this.transfer.interceptors.request.use((config) => {
      // The session cookie is as good as the password: it goes to this host and nowhere else.
      const target = new URL(config.url ?? '', config.baseURL ?? origin);
      if (target.origin !== origin) {
        throw new VsphereInvalidRequest(endpoint.host, 'datastore transfer', `${target.origin} is not this session's host; the session cookie goes nowhere else`);
      }
      if (this.#cookie) config.headers.set('Cookie', this.#cookie);
      return config;
    });
  }

  /**
   * Connects, reads the service content and logs in. HypervisorUnreachable when the host does not
   * answer, VsphereCertificateRefused (before anything is sent) when its certificate is not the
   * trusted one, VsphereLoginFailed when it refuses the user name or password.
   */
  static async open(endpoint: VsphereEndpoint, options: SessionOptions = {}): Promise<VsphereSession> {
    // The password first: a missing or loosely kept one is refused before anything is sent.
    const password = await readPassword(endpoint);
    const session = new VsphereSession(endpoint, await trustingAgent(endpoint), options);
    session.#password = password;
    try {
      session.content = (await session.exchange('RetrieveServiceContent', moRef('ServiceInstance', 'ServiceInstance'), {}, {})) as ServiceContent;
      session.#apiVersion = session.content.about?.apiVersion;
      await session.login();
    } catch (err) {
      session.#agent.destroy();
      throw err instanceof SoapFault ? errorOfFault(err, { host: endpoint.host, operation: 'Login', user: endpoint.user }) : err;
    }
    return session;
  }

  /** Calls `method` on `thisRef` and returns its parsed `returnval`; faults become vmdr's typed errors. */
  async call<T = unknown>(method: string, thisRef: MoRef | { type: string; value: string }, args: object = {}, options: CallOptions = {}): Promise<T> {
    const generation = this.#generation;
    const context = { host: this.endpoint.host, operation: method, user: this.endpoint.user, ...(options.vm ? { vm: options.vm } : {}) };
    try {
      try {
        return (await this.exchange(method, thisRef, args, options)) as T;
      } catch (err) {
        if (!isNotAuthenticated(err) || !this.#password) throw err;
        await this.loginAgain(generation);
        try {
          return (await this.exchange(method, thisRef, args, options)) as T;
        } catch (again) {
          if (isNotAuthenticated(again)) throw new VsphereNotAuthenticated(this.endpoint.host, method, { loggedInAgain: true, cause: again });
          throw again;
        }
      }
    } catch (err) {
      throw err instanceof SoapFault ? errorOfFault(err, context) : err;
    }
  }

  /** Ends the session on the server (a session that is already gone is fine) and closes connections. */
  async logout(): Promise<void> {
    try {
      if (this.#cookie) await this.exchange('Logout', this.content.sessionManager, {}, { timeoutMs: Math.min(this.#timeoutMs, 10_000) });
    } catch (err) {
      if (!isNotAuthenticated(err)) throw err instanceof SoapFault ? errorOfFault(err, { host: this.endpoint.host, operation: 'Logout' }) : err;
    } finally {
      this.#cookie = undefined;
      this.#password = undefined;
      this.sessionKey = undefined;
      this.#agent.destroy();
    }
  }

  /** Concurrent calls that found the session gone share one login; a call that failed on an older session just repeats. */
  private async loginAgain(generation: number): Promise<void> {
    if (generation !== this.#generation) return;
    this.#login ??= this.login().finally(() => (this.#login = undefined));
    await this.#login;
  }

  private async login(): Promise<void> {
    this.#cookie = undefined;
    let cookie: string | undefined;
    const session = (await this.exchange(
      'Login',
      this.content.sessionManager,
      { userName: this.endpoint.user, password: this.#password },
      {},
      (response) => {
        cookie = sessionCookieOf(response.headers['set-cookie']);
      },
    )) as { key?: string };
    if (!cookie) throw new VsphereProtocolError(this.endpoint.host, 'Login', `the answer set no ${SESSION_COOKIE} cookie`);
    this.#cookie = cookie;
    this.sessionKey = session?.key;
    this.#generation++;
  }

  /** One POST to /sdk: the parsed returnval, or a SoapFault thrown as it came. */
  private async exchange(
    method: string,
    thisRef: { type: string; value: string },
    args: object,
    options: { signal?: AbortSignal; timeoutMs?: number },
    onResponse?: (response: AxiosResponse) => void,
  ): Promise<unknown> {
    const host = this.endpoint.host;
    let body: string;
    try {
      body = buildRequest(method, thisRef, args);
    } catch (err) {
      if (err instanceof SoapValueInvalid) throw new VsphereInvalidRequest(host, method, err.message, {}, err);
      throw err;
    }
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
    const failed = (err: unknown): Error => {
      if (options.signal?.aborted) return options.signal.reason as Error;
      if (deadline.aborted) return new HypervisorTimedOut(`vSphere ${method}`, host, timeoutMs);
      return transportError(err, host, method);
    };

    let xml: string;
    try {
      const response = await axios.post<Readable>(`https://${hostForUrl(host)}:${this.endpoint.port}/sdk`, body, {
        httpsAgent: this.#agent,
        proxy: false,
        headers: {
          'Content-Type': 'text/xml; charset=utf-8',
          SOAPAction: this.#apiVersion ? `urn:vim25/${this.#apiVersion}` : 'urn:vim25',
          ...(this.#cookie ? { Cookie: this.#cookie } : {}),
        },
        responseType: 'stream',
        // A redirect would carry the request, password included, somewhere else.
        maxRedirects: 0,
        validateStatus: () => true,
        signal,
      });
      onResponse?.(response);
      xml = await readBounded(response.data, this.#maxBytes, signal, () => new VsphereResponseTooLarge(host, method, this.#maxBytes));
      // vim25 answers faults with HTTP 500 and a SOAP envelope; anything else without one is not vSphere speaking.
      if (response.status !== 200 && response.status !== 500) {
        throw new VsphereProtocolError(host, method, `HTTP ${response.status} from /sdk: is this a vCenter or ESXi host?`);
      }
    } catch (err) {
      if (err instanceof VmdrError) throw err;
      throw failed(err);
    }
    try {
      return parseResponse(method, xml);
    } catch (err) {
      if (err instanceof SoapAnswerMalformed) throw new VsphereProtocolError(host, method, err.message, err);
      throw err;
    }
  }
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

function sessionCookieOf(setCookie: string[] | string | undefined): string | undefined {
  for (const line of [setCookie ?? []].flat()) {
    const pair = line.split(';')[0]!.trim();
    if (pair.startsWith(`${SESSION_COOKIE}=`)) return pair;
  }
  return undefined;
}

/** The whole body as text, refused as soon as it grows past `limit` bytes. */
async function readBounded(stream: Readable, limit: number, signal: AbortSignal, tooLarge: () => Error): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  const stop = () => stream.destroy();
  signal.addEventListener('abort', stop, { once: true });
  try {
    for await (const chunk of stream) {
      total += (chunk as Buffer).length;
      if (total > limit) {
        stream.destroy();
        throw tooLarge();
      }
      chunks.push(chunk as Buffer);
    }
  } finally {
    signal.removeEventListener('abort', stop);
  }
  if (signal.aborted) throw signal.reason;
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * An HTTP-layer failure as vmdr's error. The axios error is not kept as the cause: it holds the
 * request, and a Login request holds the password. Only its code and message survive.
 */
function transportError(err: unknown, host: string, method: string): Error {
  const refused = causeChain(err).find((e) => e instanceof VmdrError);
  if (refused) return refused;
  const code = (err as { code?: string }).code;
  const detail = [code, (err as Error).message].filter(Boolean).join(': ') || String(err);
  const cause = Object.assign(new Error((err as Error).message ?? String(err)), code ? { code } : {});
  return new HypervisorUnreachable(host, detail, cause, { operation: method });
}

function causeChain(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && chain.length < 8; e = (e as { cause?: unknown }).cause) chain.push(e);
  return chain;
}
