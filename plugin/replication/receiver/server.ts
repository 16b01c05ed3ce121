/**
 * A site's endpoint (fastify over mutual TLS), with the replication receiver's routes: it takes
 * delta streams, answers which recovery point a protection's replica is at, and hashes a point's
 * blocks for a resync. Every client presents a certificate, and a request from no paired site is
 * refused in one hook before routing (plugin/sites/peer-auth.ts); a protection is served only
 * when this site is its target, and only to its source site. Every wait is bounded and every
 * refusal ends its connection (docs/replication.md, "The receiver's limits"): a paired site is
 * trusted with data, not with the endpoint's time.
 */
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { VmdrError } from '../../../hypervisors/errors.js';
import type { Config, Protection } from '../../config/schema.js';
import { HASH_BLOCK, HASH_BYTES, blockHashStream } from '../capture/block-hashes.js';
import { ALLOCATION_CONTEXT } from '../capture/extents.js';
import { NbdClient } from '../nbd/client.js';
import { isValidName } from '../replica/names.js';
import { serveImage } from '../replica/qemu-nbd.js';
import type { RecoveryPoint, ReplicaStore } from '../replica/store.js';
import { decodeDeltaStream } from '../stream/decode.js';
import { DELTA_STREAM_TYPE, MAX_FRAME_DATA } from '../stream/format.js';
import { errorAnswer } from './answers.js';
import { applyDeltaStream } from './apply.js';
import type { SiteIdentity } from '../../sites/identity.js';
import { identifyPeer, requirePeer } from '../../sites/peer-auth.js';
import { PinnedPeers } from '../../sites/peers.js';
import { CycleBody } from './cycle-body.js';
import { PROTECTION_UNKNOWN, ReceiverRefused } from './errors.js';
import { DEFAULT_LIMITS, checkStreamHeader, cycleBudgetMs, senderClockOffsetMs, type ReceiverLimits } from './limits.js';
import { CLOCK_HEADER } from '../../sites/peer-client.js';
import { roleOf } from '../../state/roles.js';
import { SequencerByKey } from './sequencer.js';
import { registerSourceRoutes } from './source-routes.js';
import { registerFailbackRoutes } from '../../sites/failback-routes.js';
import type { StateStore } from '../../state/store.js';
import { registerSourceSiteRoutes } from '../../sites/source-site-routes.js';
import { TenantQuotas } from '../../tenants/quotas.js';

export interface ReceiverOptions {
  config: Config;
  site: string;
  /** Absent on a site no protection targets (a source site): then no protection is served. */
  replicas?: ReplicaStore;
  /** The site's identity: the endpoint's certificate, and the certificate that means "this site" when a client presents it. */
  credentials: SiteIdentity;
  /**
   * Runs after each commit, once the sender has its answer, in turn with the protection's next
   * cycle (retention merges); its failure does not undo the commit and goes to onWarning.
   */
  onCommitted?: (protection: Protection, point: RecoveryPoint) => Promise<void>;
  /** A failed retention (with its protection), or a request that failed inside the receiver (with the correlation id of its 500). */
  onWarning?: (err: unknown, context: { protection?: string; correlation?: string }) => void;
  /**
   * A cycle whose sender sends nothing for this long is abandoned (default 60 s): a link cut
   * without a FIN must not hold the protection's turn, and its lease, forever. Any other
   * connection silent this long is closed.
   */
  bodyIdleTimeoutMs?: number;
  /** What one sender may ask of the receiver (limits.ts); defaults in DEFAULT_LIMITS. */
  limits?: Partial<ReceiverLimits>;
  /** The config file, named by errors of the source-site routes. */
  file?: string;
  /** This host's state file, for the source-site routes (a final sync records its run there). */
  state?: StateStore;
}

/** Request line and headers: a sender's are a few hundred bytes. */
const MAX_HEADER_BYTES = 8 * 1024;
const MAX_URL_BYTES = 1024;
/** JSON bodies (the hashes request) are tiny. */
const JSON_BODY_LIMIT = 16 * 1024;
/**
 * The whole of one request, a backstop only: a cycle has its own budget from its size (limits.ts),
 * and a cycle of a large VM over a slow link legitimately lasts hours.
 */
const REQUEST_TIMEOUT_MS = 7 * 24 * 3600_000;
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
/** How many requests one connection may carry before the receiver closes it. */
const MAX_REQUESTS_PER_SOCKET = 1000;
/** At most one cycle of a protection waits while another is applied: a third is pointless (it would fail on its base). */
const CYCLES_PER_PROTECTION = 2;
/** The routes, for a 405 on a known path with the wrong method. */
const ROUTES = /^\/v1\/protections\/[^/?]+\/(points|points\/latest|points\/release|source|cycles|hashes)(\?.*)?$/;

const HashesBody = z.strictObject({
  point: z.string().min(1).max(64),
  disk: z.string().refine(isValidName, 'not a disk name'),
  blockSize: z.number().int().positive().default(HASH_BLOCK),
});

export async function startReceiver(options: ReceiverOptions, listen: { host: string; port: number }): Promise<{ app: FastifyInstance; port: number }> {
  const { config, site, credentials } = options;
  // Only reached through protectionOf, which serves no protection when the site holds no replicas.
  const replicas = options.replicas as ReplicaStore;
  const quotas = options.replicas && new TenantQuotas(site, options.replicas.storage, config, options.replicas.state);
  const peers = new PinnedPeers(credentials.dir);
  const limits: ReceiverLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const idleMs = options.bodyIdleTimeoutMs ?? 60_000;
  const app = Fastify({
    https: {
      cert: credentials.cert,
      key: credentials.key,
      // Mutual TLS: every client shows a certificate; which ones are welcome is the onRequest
      // hook's decision (by pinned fingerprint), so a refusal is an answer with a code, not a cut handshake.
      requestCert: true,
      rejectUnauthorized: false,
      handshakeTimeout: limits.headersTimeoutMs,
      // Node's http options ride with the TLS ones: how long the headers may take, and how often
      // it checks (default 30 s, too coarse for a 10 s limit).
      headersTimeout: limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs / 2),
      maxHeaderSize: MAX_HEADER_BYTES,
    } as { cert: Buffer; key: Buffer },
    logger: false,
    connectionTimeout: idleMs,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    maxRequestsPerSocket: MAX_REQUESTS_PER_SOCKET,
    bodyLimit: JSON_BODY_LIMIT,
    // Protection names are up to 128 characters (replica/names.ts); longer answers 414.
    routerOptions: { maxParamLength: 128 },
    frameworkErrors: (err, _req, reply) => answer(reply, err),
    clientErrorHandler: (err, socket) => refuseMalformed(err as NodeJS.ErrnoException, socket),
  });
  app.server.maxConnections = limits.maxConnections;
  const turns = new SequencerByKey();
  const cycles = new Map<string, number>();
  /** Cycles and hash requests under way: each holds buffers, so their number bounds the memory. */
  let busy = 0;
  const refuseWhenBusy = (reply: FastifyReply, protection: string) => {
    if (busy < limits.maxCycles) return;
    void reply.header('retry-after', '30');
    throw new ReceiverRefused('RECEIVER_BUSY', `the receiver of site "${site}" serves ${limits.maxCycles} cycles and hash requests at once; try again later`, 503, { protection });
  };
  // A merge started after a commit must finish before the state file closes under it; a kill -9
  // instead is what recover() is for.
  app.addHook('onClose', async () => turns.idle());

  // The delta stream is consumed as it arrives, never buffered: hand the raw request on.
  app.addContentTypeParser(DELTA_STREAM_TYPE, (_req, payload, done) => done(null, payload));

  const answer = (reply: FastifyReply, err: unknown) => {
    const { status, body, correlation } = errorAnswer(err);
    if (correlation) options.onWarning?.(err, { correlation });
    return reply.code(status).header('content-type', 'application/json').send(JSON.stringify(body));
  };

  app.addHook('onRequest', async (req, reply) => {
    if (req.url.length > MAX_URL_BYTES) {
      return answer(reply, new ReceiverRefused('URI_TOO_LONG', `the URL is longer than ${MAX_URL_BYTES} bytes`, 414));
    }
    try {
      req.peer = await identifyPeer(req, { site, fingerprint: credentials.fingerprint }, peers);
    } catch (err) {
      return answer(reply, err);
    }
  });

  // A refused request's body is never read: the connection ends with the answer (Node then
  // closes the socket once the answer is flushed, instead of reading the rest of the body).
  app.addHook('onSend', async (_req, reply, payload) => {
    if (reply.statusCode >= 400) void reply.header('connection', 'close');
    return payload;
  });

  app.setErrorHandler((err, _req, reply) => answer(reply, err));
  app.setNotFoundHandler((req, reply) =>
    ROUTES.test(req.url)
      ? answer(reply, new ReceiverRefused('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${req.url.split('?')[0]}`, 405))
      : answer(reply, new ReceiverRefused('NOT_FOUND', 'no such route', 404)),
  );

  /** The protection named, when its replica is here and the peer asking is its source site; else the same 404 either way. */
  const protectionOf = (req: FastifyRequest, name: string): Protection => {
    const unknown = () => new ReceiverRefused(PROTECTION_UNKNOWN, `site "${site}" holds no replica of protection "${name}"`, 404, { protection: name });
    const p = options.replicas ? config.protections.find((x) => x.name === name && x.target.site === site) : undefined;
    if (!p) throw unknown();
    requirePeer(req, p.source.site, unknown);
    return p;
  };
  const send = (reply: FastifyReply, body: unknown) => reply.header('content-type', 'application/json').send(JSON.stringify(body));

  /**
   * While a request waits for its protection's turn the receiver reads nothing from it: a
   * 102 Processing now and then tells the sender (and any idle timer between) that it is alive.
   */
  const whileWaiting = (reply: FastifyReply): (() => void) => {
    const timer = setInterval(() => reply.raw.writeProcessing(), Math.min(30_000, idleMs / 2));
    return () => clearInterval(timer);
  };

  app.get<{ Params: { protection: string } }>('/v1/protections/:protection/points', async (req, reply) => {
    const p = protectionOf(req, req.params.protection);
    const points = replicas.listPoints(p.name);
    return send(reply, { points, space: await replicas.space(p.name) });
  });

  app.get<{ Params: { protection: string } }>('/v1/protections/:protection/points/latest', async (req, reply) => {
    const p = protectionOf(req, req.params.protection);
    // The role rides along, so a sender learns that the protection was failed over before it
    // starts streaming (a refusal mid-body reaches it as a cut connection, not as the reason).
    const role = roleOf(replicas.state.db, p.name);
    return send(reply, { point: replicas.latestPoint(p.name) ?? null, role: role.role, failover: role.failover });
  });

  app.post<{ Params: { protection: string } }>('/v1/protections/:protection/cycles', async (req, reply) => {
    const p = protectionOf(req, req.params.protection);
    if (req.headers['content-type'] !== DELTA_STREAM_TYPE) {
      throw new ReceiverRefused('UNSUPPORTED_MEDIA_TYPE', `a cycle's body must be ${DELTA_STREAM_TYPE}`, 415, { protection: p.name });
    }
    refuseWhenBusy(reply, p.name);
    if ((cycles.get(p.name) ?? 0) >= CYCLES_PER_PROTECTION) {
      throw new ReceiverRefused('REPLICA_BUSY', `protection "${p.name}" already has a cycle running and one waiting`, 409, { protection: p.name });
    }
    busy += 1;
    cycles.set(p.name, (cycles.get(p.name) ?? 0) + 1);
    let stopWaiting = () => {};
    let releaseQuota = () => {};
    try {
      // The body's own timers (CycleBody) bound waiting for the sender; the socket's idle timer
      // would also fire while the cycle waits for its turn or its writes, which is no fault of the sender.
      req.raw.setTimeout(0);
      const body = new CycleBody(req.body as AsyncIterable<Buffer>, p.name, idleMs, limits.minCycleMs);
      const stream = await decodeDeltaStream(body);
      // Before the turn and before anything exists on disk: a header the replica cannot take.
      const offsetMs = senderClockOffsetMs(req.headers[CLOCK_HEADER], limits);
      checkStreamHeader(stream.header, p.name, replicas.latestPoint(p.name), limits, Date.now(), offsetMs);
      // Still before the turn and before anything exists: the tenant's quotas, from what the header announces.
      releaseQuota = await quotas!.admitCycle(p, stream.header.dataBytes);
      body.setBudget(cycleBudgetMs(stream.header, limits));
      // The header is taken: the sender waits for this before it sends the frames (ReceiverClient.sendCycle).
      reply.raw.writeProcessing();
      stopWaiting = whileWaiting(reply);
      const { point } = await turns.run(p.name, () => {
        stopWaiting();
        return applyDeltaStream(replicas, p.name, stream, () => body.wire, offsetMs);
      });
      if (options.onCommitted) {
        void turns.run(p.name, () => options.onCommitted!(p, point)).catch((err: unknown) => options.onWarning?.(err, { protection: p.name }));
      }
      // After retention, in the same turns: the next cycle then finds its overlays made.
      void turns.run(p.name, () => replicas.prepareNext(p.name)).catch((err: unknown) => options.onWarning?.(err, { protection: p.name }));
      return send(reply, { point });
    } finally {
      stopWaiting();
      releaseQuota();
      busy -= 1;
      const left = (cycles.get(p.name) ?? 1) - 1;
      if (left > 0) cycles.set(p.name, left);
      else cycles.delete(p.name);
    }
  });

  app.post<{ Params: { protection: string } }>('/v1/protections/:protection/hashes', async (req, reply) => {
    const p = protectionOf(req, req.params.protection);
    const body = HashesBody.parse(req.body);
    if (body.blockSize < HASH_BLOCK || body.blockSize > MAX_FRAME_DATA || (body.blockSize & (body.blockSize - 1)) !== 0) {
      throw new ReceiverRefused(
        'HASH_BLOCK_SIZE_INVALID',
        `block size ${body.blockSize} is not a power of two from ${HASH_BLOCK} (the replica's granularity) to ${MAX_FRAME_DATA}`,
        422,
        { protection: p.name },
      );
    }
    // The turn may take a while to come, and the hashing reads the disk: the socket's idle timer
    // goes back on once the answer starts (a client that stops reading it is dropped).
    refuseWhenBusy(reply, p.name);
    busy += 1;
    req.raw.setTimeout(0);
    const stopWaiting = whileWaiting(reply);
    try {
      // In turn with cycles and merges: a point's image must not change under the hashing.
      await turns.run(p.name, async () => {
        stopWaiting();
        const point = replicas.getPoint(p.name, body.point);
        req.raw.setTimeout(idleMs);
        await sendHashes(reply, point, body.disk, body.blockSize);
      });
    } finally {
      stopWaiting();
      busy -= 1;
    }
    return reply;
  });

  registerSourceRoutes(app, { protectionOf, replicas, quotas: quotas! });
  registerFailbackRoutes(app, { config, site, idleMs, limits });
  registerSourceSiteRoutes(app, { config, file: options.file ?? 'the config', site, state: options.state ?? options.replicas?.state, onWarning: options.onWarning });

  try {
    await app.listen({ host: listen.host, port: listen.port });
  } catch (err) {
    await app.close();
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EADDRINUSE' ? 'the address is in use (is another vmdr serve running?)' : code === 'EADDRNOTAVAIL' ? 'no such address on this host' : (err as Error).message;
    throw new VmdrError('RECEIVER_LISTEN_FAILED', `the receiver of site "${site}" cannot listen on ${listen.host}:${listen.port}: ${why}`, {
      subject: { site, host: `${listen.host}:${listen.port}` },
      cause: err,
    });
  }
  return { app, port: (app.server.address() as AddressInfo).port };
}

/** A request Node could not parse (or whose headers took too long): one answer, then the connection ends. */
function refuseMalformed(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, text] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'REQUEST_TIMEOUT', 'Request Timeout']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'HEADERS_TOO_LARGE', 'Request Header Fields Too Large']
    : [400, 'BAD_REQUEST', 'Bad Request'];
  const body = JSON.stringify({ error: { code, message: `${text.toLowerCase()}` } });
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  }
  // The socket is half-open after end() (an HTTP server's are): a client that never closes its side is cut.
  setTimeout(() => socket.destroy(), 1_000).unref();
}

/**
 * Answers with the block hashes of one disk of a point as they are computed (nothing when the
 * point has no such disk: a new disk); resolves once the answer is sent or the client is gone.
 */
async function sendHashes(reply: FastifyReply, point: RecoveryPoint, diskName: string, blockSize: number): Promise<void> {
  const disk = point.disks.find((d) => d.disk === diskName);
  void reply.header('content-type', 'application/octet-stream');
  if (!disk) {
    await reply.send(Buffer.alloc(0));
    return;
  }
  const server = await serveImage(disk.image, { readOnly: true });
  try {
    const client = await NbdClient.connect(server.listen, { exportName: '', metaContexts: [ALLOCATION_CONTEXT] });
    try {
      const hashes = Readable.from(blockHashStream(client, blockSize), { objectMode: false });
      // The length is known up front: a sender can tell a cut answer from a whole one.
      void reply.header('content-length', String(Math.ceil(client.size / blockSize) * HASH_BYTES));
      void reply.send(hashes);
      await finished(hashes).catch(() => undefined);
    } finally {
      await client.close();
    }
  } finally {
    await server.stop();
  }
}
