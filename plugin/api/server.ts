/**
 * The daemon's HTTP API (fastify over HTTPS): versioned JSON routes under /api/v1 whose requests are
 * checked by the same zod schemas that describe them in the OpenAPI document served at
 * /api/v1/openapi.json. Every route but that document, /healthz and the status page (status-page.ts,
 * which holds no data and reads these routes with the token its reader gives it) needs a bearer token
 * (auth.ts).
 *
 * Bounded like every server of vmdr: request line and headers, bodies, the time a request may take
 * to arrive and to be answered, connections at once. Logs are pino's JSON lines on stderr, one per
 * request with its id (the client's `x-request-id` when it sends a sane one), the token never in
 * them. Mutating calls leave an audit record (audit.ts).
 */
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import fastifySwagger from '@fastify/swagger';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { VmdrError } from '../../hypervisors/errors.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Notifier } from '../notifications/notifier.js';
import type { SyncResult } from '../replication/sync.js';
import type { SiteConnections } from '../sites/connections.js';
import type { SiteIdentity } from '../sites/identity.js';
import type { StateStore } from '../state/store.js';
import { authenticate } from '../tenants/tokens.js';
import { apiErrorAnswer } from './answers.js';
import { recordMutations } from './audit.js';
import { Operations } from './operations.js';
import { registerAuditRoutes } from './routes/audit.js';
import { registerDrillRoutes } from './routes/drills.js';
import { registerFailoverRoutes } from './routes/failovers.js';
import { registerOperationRoutes } from './routes/operations.js';
import { registerProtectionRoutes } from './routes/protections.js';
import { registerStatusRoutes } from './routes/status.js';
import { registerTenantRoutes } from './routes/tenants.js';
import { registerTokenRoutes } from './routes/tokens.js';
import { registerWhoAmIRoute } from './routes/whoami.js';
import { loadStatusPage, registerStatusPage, STATUS_PAGE_PATHS } from './status-page.js';
import { StatusCache } from './status-cache.js';

export const API_PREFIX = '/api/v1';
export const OPENAPI_PATH = `${API_PREFIX}/openapi.json`;
export const HEALTH_PATH = '/healthz';

export interface ApiLimits {
  /** A JSON body (every request body is small: names and options). */
  bodyBytes: number;
  /** From a request's first byte to its answer (a stream of events excepted: it lasts its operation). */
  requestMs: number;
  /** From a connection's start to the end of its headers. */
  headersMs: number;
  connections: number;
}

export const DEFAULT_API_LIMITS: ApiLimits = { bodyBytes: 64 * 1024, requestMs: 30_000, headersMs: 10_000, connections: 512 };

export interface ApiDeps {
  file: string;
  config: Config;
  state: StateStore;
  sites: SiteConnections;
  credentials: SiteIdentity;
  /** The site this daemon serves (`vmdr serve --site`): syncs of protections of other source sites are refused. */
  site?: string;
  limits?: Partial<ApiLimits>;
  /** Where request logs go (default: stderr); `false` for none. */
  log?: NodeJS.WritableStream | false;
  /** A sync the API ran ended with this point (for the daemon's lag and metrics, as the loops' cycles). */
  onSynced?: (result: SyncResult) => void;
  /**
   * The daemon's reload, run after the API changed the config file: the daemon's parts (its loops,
   * receivers) take the change too, and the config it resolves with is the one the API reads from
   * then. Without it (an API alone, in tests) the API reads the file for itself.
   */
  reloadConfig?: () => Promise<Config>;
  /** Who tells the webhooks of the drills the API runs (the daemon's notifier). */
  notifier?: Notifier;
  /** Routes added by others of the daemon (the metrics), after authentication is in place. */
  extraRoutes?: (app: FastifyInstance) => void | Promise<void>;
}

export interface ApiContext {
  file: string;
  /** The config as the daemon's API knows it: read afresh after each change the API makes to it. */
  config: Config;
  /** Reads the config file again (after the API changed it). */
  reloadConfig(): Promise<void>;
  state: StateStore;
  sites: SiteConnections;
  site?: string;
  onSynced?: (result: SyncResult) => void;
  notifier?: Notifier;
  operations: Operations;
  status: StatusCache;
}

export interface ApiServer {
  app: FastifyInstance;
  /** https://host:port it listens on. */
  url: string;
  fingerprint: string;
  close(): Promise<void>;
}

/**
 * One log line per request, when it is answered (what was asked, by whom, the status, how long),
 * not fastify's two (on arrival and on answer): under load a line costs about what a small
 * answer does.
 */
class OneLinePerRequest extends LogController {
  override incomingRequest(): void {}
  override requestCompleted(error: Error | null | undefined, req: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ req, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
    else reply.log.info({ req, res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}

/** A client's request id is taken when it is short and plain; otherwise one is made. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export async function startApi(deps: ApiDeps, listen: { host: string; port: number }): Promise<ApiServer> {
  const limits = { ...DEFAULT_API_LIMITS, ...deps.limits };
  const statusPage = await loadStatusPage();
  // The https options make fastify's instance of another server type; the routes need none of it.
  const app = Fastify({
    https: {
      cert: deps.credentials.cert,
      key: deps.credentials.key,
      handshakeTimeout: limits.headersMs,
      headersTimeout: limits.headersMs,
      connectionsCheckingInterval: 1_000,
      maxHeaderSize: 16 * 1024,
    } as { cert: Buffer; key: Buffer },
    logger: deps.log === false ? false : { base: { service: 'vmdr-api' }, redact: ['req.headers.authorization'], stream: deps.log ?? process.stderr },
    logController: new OneLinePerRequest(),
    bodyLimit: limits.bodyBytes,
    requestTimeout: limits.requestMs,
    keepAliveTimeout: 5_000,
    maxRequestsPerSocket: 10_000,
    routerOptions: { maxParamLength: 128 },
    // genReqId reads the client's id itself, to take only a sane one.
    requestIdHeader: false,
    genReqId: (req) => {
      const asked = req.headers['x-request-id'];
      return typeof asked === 'string' && REQUEST_ID.test(asked) ? asked : randomUUID();
    },
  }) as unknown as FastifyInstance;
  app.server.maxConnections = limits.connections;
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  const answer = (reply: FastifyReply, err: unknown) => {
    const { status, body, correlation } = apiErrorAnswer(err);
    reply.errorCode = body.error.code;
    if (correlation) reply.log.error({ err, correlation }, 'request failed inside vmdr');
    return reply.code(status).header('content-type', 'application/json').send(JSON.stringify(body));
  };
  app.setErrorHandler((err, _req, reply) => answer(reply, err));
  app.setNotFoundHandler((_req, reply) => answer(reply, apiRefusal('NOT_FOUND', 'no such route')));

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
    // Bounds the answer's time too (requestTimeout bounds only the request's arrival).
    const timer = setTimeout(() => {
      if (!reply.sent && !reply.raw.headersSent) void answer(reply, apiRefusal('REQUEST_TIMEOUT', `no answer within ${limits.requestMs / 1000} s`));
    }, limits.requestMs);
    timer.unref();
    reply.raw.once('close', () => clearTimeout(timer));
    const path = req.url.split('?')[0] ?? req.url;
    if (path === HEALTH_PATH || path === OPENAPI_PATH || STATUS_PAGE_PATHS.has(path)) return;
    req.principal = authenticate(deps.state, req.headers.authorization);
  });
  recordMutations(app, deps.state);

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'vmdr', description: 'Disaster recovery of VMs: protections, recovery points, failover, drills, tenants', version: '1' },
      components: { securitySchemes: { token: { type: 'http', scheme: 'bearer' } } },
      security: [{ token: [] }],
    },
    transform: jsonSchemaTransform,
  });

  const ctx: ApiContext = {
    file: deps.file,
    config: deps.config,
    reloadConfig: async () => {
      ctx.config = deps.reloadConfig ? await deps.reloadConfig() : (await loadConfig(deps.file)).config;
      ctx.status.forget();
    },
    state: deps.state,
    sites: deps.sites,
    ...(deps.site ? { site: deps.site } : {}),
    ...(deps.onSynced ? { onSynced: deps.onSynced } : {}),
    ...(deps.notifier ? { notifier: deps.notifier } : {}),
    operations: new Operations(),
    status: new StatusCache(() => ({ file: deps.file, config: ctx.config, state: deps.state, sites: deps.sites })),
  };

  app.get(HEALTH_PATH, { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get(OPENAPI_PATH, { schema: { hide: true } }, async () => app.swagger());
  registerStatusPage(app, statusPage);
  await app.register(
    async (api) => {
      registerStatusRoutes(api, ctx);
      registerProtectionRoutes(api, ctx);
      registerOperationRoutes(api, ctx);
      registerFailoverRoutes(api, ctx);
      registerDrillRoutes(api, ctx);
      registerTenantRoutes(api, ctx);
      registerTokenRoutes(api, ctx);
      registerAuditRoutes(api, ctx);
      registerWhoAmIRoute(api, ctx);
    },
    { prefix: API_PREFIX },
  );
  if (deps.extraRoutes) await app.register(async (extra) => deps.extraRoutes!(extra));
  app.addHook('onClose', async () => ctx.operations.close());

  await app.listen(listen);
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return { app, url: `https://${host}:${address.port}`, fingerprint: deps.credentials.fingerprint, close: () => app.close() };
}

/** A refusal of the API's own (a route that does not exist, a request that took too long). */
export function apiRefusal(code: string, message: string): VmdrError {
  return new VmdrError(code, message, { subject: {} });
}
