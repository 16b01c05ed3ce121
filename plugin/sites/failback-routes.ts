/**
 * The source site's endpoint routes of a failback (reverse replication): the block hashes of a
 * disk of a protection's source VM, and a stream of the blocks that differ, written into it and
 * answered "committed" only after a flush (plugin/failover/source-disk.ts). Only the protection's
 * DR site may ask (requirePeer), only for protections whose source is this site, one request per
 * disk at a time, and every body is bounded: the delta stream decoder checks each frame, and the
 * body's own timers (CycleBody) bound how long a DR site may keep this site waiting.
 * Registered by startReceiver: registerFailbackRoutes(app, { config, site, idleMs, limits }).
 */
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config, Protection } from '../config/schema.js';
import { withSourceDisk, writeFailbackStream } from '../failover/source-disk.js';
import { HASH_BLOCK, HASH_BYTES, blockHashStream } from '../replication/capture/block-hashes.js';
import { CycleBody } from '../replication/receiver/cycle-body.js';
import { PROTECTION_UNKNOWN, ReceiverRefused } from '../replication/receiver/errors.js';
import { cycleBudgetMs, type ReceiverLimits } from '../replication/receiver/limits.js';
import { SequencerByKey } from '../replication/receiver/sequencer.js';
import { isValidName } from '../replication/replica/names.js';
import { decodeDeltaStream } from '../replication/stream/decode.js';
import { DELTA_STREAM_TYPE } from '../replication/stream/format.js';
import { SiteConnections } from './connections.js';
import { requirePeer } from './peer-auth.js';

/** Failback requests under way on this site, all protections together: each holds a qemu-nbd and up to 32 MiB. */
const MAX_FAILBACK_REQUESTS = 8;
/** One request on a disk, and one waiting for its turn: a third is a DR site out of step. */
const REQUESTS_PER_DISK = 2;

type Params = { protection: string; disk: string };

export function registerFailbackRoutes(app: FastifyInstance, ctx: { config: Config; site: string; idleMs: number; limits: ReceiverLimits }): void {
  const sites = new SiteConnections(ctx.config, 'the config');
  const turns = new SequencerByKey();
  const queued = new Map<string, number>();
  let busy = 0;
  app.addHook('onClose', async () => {
    await turns.idle();
    await sites.close();
  });

  const protectionOf = (name: string): Protection => {
    const p = ctx.config.protections.find((x) => x.name === name && x.source.site === ctx.site);
    if (!p) throw new ReceiverRefused(PROTECTION_UNKNOWN, `site "${ctx.site}" is not the source site of protection "${name}"`, 404, { protection: name });
    return p;
  };

  /**
   * Runs one request on one disk of the source VM in its turn (a pass's blocks follow its hashes
   * at once, while the hashing's writer still closes), one waiting at most; the source side's
   * refusals keep their codes.
   */
  const onDisk = async <T>(p: Protection, disk: string, reply: FastifyReply, run: () => Promise<T>): Promise<T> => {
    if (!isValidName(disk)) throw new ReceiverRefused('BAD_REQUEST', `"${disk}" is not a disk name`, 400, { protection: p.name });
    const key = `${p.name}\n${disk}`;
    if ((queued.get(key) ?? 0) >= REQUESTS_PER_DISK) {
      throw new ReceiverRefused('FAILBACK_BUSY', `disk ${disk} of protection "${p.name}" is already being compared or written, and another request waits`, 409, { protection: p.name });
    }
    if (busy >= MAX_FAILBACK_REQUESTS) {
      void reply.header('retry-after', '30');
      throw new ReceiverRefused('RECEIVER_BUSY', `site "${ctx.site}" serves ${MAX_FAILBACK_REQUESTS} failback requests at once; try again later`, 503, { protection: p.name });
    }
    busy += 1;
    queued.set(key, (queued.get(key) ?? 0) + 1);
    try {
      return await turns.run(key, run);
    } catch (err) {
      // A stream refused by the decoder answers with its own code; the source VM's state (running,
      // no such disk, too small) is the DR site's to fix, not a fault of this site.
      if (err instanceof VmdrError && err.userError && !(err instanceof ReceiverRefused) && !err.code.startsWith('STREAM_')) {
        throw new ReceiverRefused(err.code, err.message, 409, { protection: p.name });
      }
      throw err;
    } finally {
      busy -= 1;
      const left = (queued.get(key) ?? 1) - 1;
      if (left > 0) queued.set(key, left);
      else queued.delete(key);
    }
  };

  app.get<{ Params: Params }>('/v1/protections/:protection/failback/disks/:disk/hashes', async (req, reply) => {
    const p = protectionOf(req.params.protection);
    requirePeer(req, p.target.site);
    const adapter = await sites.adapter(p.source.site);
    // Hashing reads the whole disk before the answer starts: the socket's idle timer waits meanwhile.
    req.raw.setTimeout(0);
    await onDisk(p, req.params.disk, reply, () =>
      withSourceDisk(adapter, p, req.params.disk, async (client) => {
        req.raw.setTimeout(ctx.idleMs);
        const hashes = Readable.from(blockHashStream(client, HASH_BLOCK), { objectMode: false });
        // The length is known up front: the DR site tells a cut answer from a whole one.
        void reply.header('content-type', 'application/octet-stream').header('content-length', String(Math.ceil(client.size / HASH_BLOCK) * HASH_BYTES));
        void reply.send(hashes);
        await finished(hashes).catch(() => undefined);
      }),
    );
    return reply;
  });

  app.post<{ Params: Params }>('/v1/protections/:protection/failback/disks/:disk/blocks', async (req, reply) => {
    const p = protectionOf(req.params.protection);
    requirePeer(req, p.target.site);
    if (req.headers['content-type'] !== DELTA_STREAM_TYPE) {
      throw new ReceiverRefused('UNSUPPORTED_MEDIA_TYPE', `a failback stream's body must be ${DELTA_STREAM_TYPE}`, 415, { protection: p.name });
    }
    const adapter = await sites.adapter(p.source.site);
    return onDisk(p, req.params.disk, reply, async () => {
      req.raw.setTimeout(0);
      const body = new CycleBody(req.body as AsyncIterable<Buffer>, p.name, ctx.idleMs, ctx.limits.minCycleMs);
      const stream = await decodeDeltaStream(body);
      body.setBudget(cycleBudgetMs(stream.header, ctx.limits));
      const written = await writeFailbackStream(adapter, p, req.params.disk, stream);
      return reply.header('content-type', 'application/json').send(JSON.stringify(written));
    });
  });
}
