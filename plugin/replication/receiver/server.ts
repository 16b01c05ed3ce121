/**
 * The replication receiver of a DR site: an HTTPS endpoint (fastify) that takes delta streams,
 * answers which recovery point a protection's replica is at, and hashes a point's blocks for a
 * resync. Every request carries the site's bearer token (checked in one hook, in constant time);
 * the certificate is the one senders pin. Only protections whose target is this site are served.
 */
import { timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { z } from 'zod';
import { VmdrError } from '../../../hypervisors/errors.js';
import type { Config, Protection } from '../../config/schema.js';
import { HASH_BLOCK, blockHashes } from '../capture/block-hashes.js';
import { ALLOCATION_CONTEXT } from '../capture/extents.js';
import { NbdClient } from '../nbd/client.js';
import { serveImage } from '../replica/qemu-nbd.js';
import type { RecoveryPoint, ReplicaStore } from '../replica/store.js';
import { DELTA_STREAM_TYPE } from '../stream/format.js';
import { applyDeltaStream } from './apply.js';
import type { ReceiverCredentials } from './credentials.js';
import { PROTECTION_UNKNOWN, ReceiverRefused } from './errors.js';
import { roleOf } from '../../state/roles.js';
import { SequencerByKey } from './sequencer.js';
import { registerSourceRoutes } from './source-routes.js';


export interface ReceiverOptions {
  config: Config;
  site: string;
  replicas: ReplicaStore;
  credentials: ReceiverCredentials;
  /**
   * Runs after each commit, once the sender has its answer, in turn with the protection's next
   * cycle (retention merges); its failure does not undo the commit and goes to onWarning.
   */
  onCommitted?: (protection: Protection, point: RecoveryPoint) => Promise<void>;
  onWarning?: (err: unknown, context: { protection: string }) => void;
  /**
   * A cycle whose body sends nothing for this long is abandoned (default 60 s): a link cut without
   * a FIN must not hold the protection's turn, and its lease, forever.
   */
  bodyIdleTimeoutMs?: number;
}

const HashesBody = z.strictObject({
  point: z.string().min(1),
  disk: z.string().min(1),
  blockSize: z.number().int().min(4096).max(16 * 1024 * 1024).default(HASH_BLOCK),
});

/** HTTP status for a VmdrError code: the sender turns the body back into the same error. */
function statusOf(err: VmdrError): number {
  if (err instanceof ReceiverRefused) return err.status;
  if (err.code.startsWith('STREAM_')) return 400;
  if (err.code === 'REPLICA_BUSY' || err.code === 'PROTECTION_FAILED_OVER') return 409;
  if (err.code === 'RECOVERY_POINT_NOT_FOUND') return 404;
  return 500;
}

export async function startReceiver(options: ReceiverOptions, listen: { host: string; port: number }): Promise<{ app: FastifyInstance; port: number }> {
  const { config, site, replicas, credentials } = options;
  const app = Fastify({ https: { cert: credentials.cert, key: credentials.key }, logger: false, requestTimeout: 0 });
  const token = Buffer.from(`Bearer ${credentials.token}`);
  const turns = new SequencerByKey();
  // A merge started after a commit must finish before the state file closes under it; a kill -9
  // instead is what recover() is for.
  app.addHook('onClose', async () => turns.idle());

  // The delta stream is consumed as it arrives, never buffered: hand the raw request on.
  app.addContentTypeParser(DELTA_STREAM_TYPE, (_req, payload, done) => done(null, payload));

  app.addHook('onRequest', async (req, reply) => {
    const given = Buffer.from(req.headers.authorization ?? '');
    if (given.length !== token.length || !timingSafeEqual(given, token)) {
      return reply.code(401).send({ error: { code: 'UNAUTHORIZED', message: 'missing or wrong receiver token' } });
    }
  });

  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof VmdrError) return reply.code(statusOf(err)).send({ error: err.toJSON() });
    if (err instanceof z.ZodError) return reply.code(400).send({ error: { code: 'BAD_REQUEST', message: err.issues[0]?.message } });
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    return reply.code(status).send({ error: { code: status < 500 ? 'BAD_REQUEST' : 'INTERNAL', message: (err as Error).message } });
  });

  const protectionOf = (name: string): Protection => {
    const p = config.protections.find((x) => x.name === name && x.target.site === site);
    if (!p) throw new ReceiverRefused(PROTECTION_UNKNOWN, `site "${site}" holds no replica of protection "${name}"`, 404, { protection: name });
    return p;
  };
  const send = (reply: FastifyReply, body: unknown) => reply.header('content-type', 'application/json').send(JSON.stringify(body));

  app.get<{ Params: { protection: string } }>('/v1/protections/:protection/points', async (req, reply) => {
    const p = protectionOf(req.params.protection);
    return send(reply, { points: replicas.listPoints(p.name) });
  });

  app.get<{ Params: { protection: string } }>('/v1/protections/:protection/points/latest', async (req, reply) => {
    const p = protectionOf(req.params.protection);
    // The role rides along, so a sender learns that the protection was failed over before it
    // starts streaming (a refusal mid-body reaches it as a cut connection, not as the reason).
    const role = roleOf(replicas.state.db, p.name);
    return send(reply, { point: replicas.latestPoint(p.name) ?? null, role: role.role, failover: role.failover });
  });

  app.post<{ Params: { protection: string } }>('/v1/protections/:protection/cycles', async (req, reply) => {
    const p = protectionOf(req.params.protection);
    if (req.headers['content-type'] !== DELTA_STREAM_TYPE) {
      throw new ReceiverRefused('BAD_REQUEST', `a cycle's body must be ${DELTA_STREAM_TYPE}`, 415, { protection: p.name });
    }
    let wire = 0;
    const body = req.body as AsyncIterable<Buffer>;
    const idleMs = options.bodyIdleTimeoutMs ?? 60_000;
    // Socket inactivity ends the body with an error, which the decoder reports as a cut stream.
    req.raw.setTimeout(idleMs, () =>
      req.raw.destroy(new ReceiverRefused('STREAM_STALLED', `no data from the sender for ${idleMs / 1000} s`, 408, { protection: p.name })),
    );
    const counted = (async function* () {
      for await (const chunk of body) {
        wire += chunk.length;
        yield chunk;
      }
    })();
    const { point } = await turns
      .run(p.name, () => applyDeltaStream(replicas, p.name, counted, () => wire))
      .catch((err: unknown) => {
        // A refused stream is answered before its body was read to the end, and Node does not drain
        // a body that was partly read: the rest would stall the next request on this keep-alive
        // connection forever. The connection ends with the answer instead.
        void reply.header('connection', 'close');
        throw err;
      })
      // The watchdog is the body's; a later request on this connection (hashes) may be silent longer.
      .finally(() => req.raw.setTimeout(0));
    if (options.onCommitted) {
      void turns.run(p.name, () => options.onCommitted!(p, point)).catch((err: unknown) => options.onWarning?.(err, { protection: p.name }));
    }
    return send(reply, { point });
  });

  app.post<{ Params: { protection: string } }>('/v1/protections/:protection/hashes', async (req, reply) => {
    const p = protectionOf(req.params.protection);
    const body = HashesBody.parse(req.body);
    // In turn with merges: a point's image must not change under the hashing.
    const hashes = await turns.run(p.name, () => hashPoint(replicas.getPoint(p.name, body.point), body.disk, body.blockSize));
    return reply.header('content-type', 'application/octet-stream').send(hashes);
  });

  registerSourceRoutes(app, { protectionOf, replicas });

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

/** The block hashes of one disk of a point; empty when the point has no such disk (a new disk). */
async function hashPoint(point: RecoveryPoint, diskName: string, blockSize: number): Promise<Buffer> {
  const disk = point.disks.find((d) => d.disk === diskName);
  if (!disk) return Buffer.alloc(0);
  const server = await serveImage(disk.image, { readOnly: true });
  try {
    const client = await NbdClient.connect(server.listen, { exportName: '', metaContexts: [ALLOCATION_CONTEXT] });
    try {
      return await blockHashes(client, blockSize);
    } finally {
      await client.close();
    }
  } finally {
    await server.stop();
  }
}
