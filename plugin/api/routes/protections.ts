/**
 * Protections through the API: list and show (from the config the daemon runs), their recovery
 * points, and a sync now (202 and an operation to follow). A tenant's token sees its tenant's
 * protections only; every other name answers as one that does not exist.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { VmdrError } from '../../../hypervisors/errors.js';
import type { Protection } from '../../config/schema.js';
import { groupPointSeq, POINT_TIERS, recoveryPointsAndSpace, tiersOf, type PointTier } from '../../replication/points.js';
import type { RecoveryPoint } from '../../replication/replica/store.js';
import { syncAsAsked } from '../../replication/sync-request.js';
import { pauseOf, pauseProtection, resumeProtection } from '../../state/pauses.js';
import { addProtection } from '../../protections/add.js';
import { removeProtection } from '../../protections/remove.js';
import { clearHold } from '../../watch/hold.js';
import { sendJson } from '../answers.js';
import { mayOperate, operatorOnly, principalOf, visible, visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';
import { describeOperationError, OperationAccepted, operationAccepted } from './operations.js';

/**
 * A name as a request carries it: a protection's, or the source VM's the CLI also takes. Path
 * separators, `..` and control characters are refused here, at the edge, with 400 naming the
 * parameter: no such name reaches a lookup, a log line or a path.
 */
export const SafeName = z
  .string()
  .min(1)
  .max(128)
  .refine((s) => !/[\/\\\x00-\x1f\x7f]/.test(s) && !s.includes('..'), 'a name without "/", "\\", ".." or control characters');

export const NameParams = z.strictObject({ name: SafeName });

export const ProtectionView = z.object({
  name: z.string(),
  tenant: z.string().nullable(),
  source: z.object({ site: z.string(), vm: z.string() }),
  target: z.object({ site: z.string(), vm: z.string() }),
  rpoSeconds: z.number(),
  continuous: z.boolean(),
  compression: z.enum(['auto', 'off']),
});

const PointView = z.object({
  id: z.string(),
  protection: z.string(),
  seq: z.number(),
  time: z.string(),
  committedAt: z.string(),
  kind: z.enum(['full', 'incremental', 'resync']),
  checkpoint: z.string(),
  since: z.string().nullable(),
  bytesShipped: z.number(),
  dataBytes: z.number(),
  zeroBytes: z.number(),
  pinned: z.boolean(),
  replacedSource: z.string().nullable(),
  /** Why retention keeps it (its tier, or newest, pinned, replaced, held-by-pin, group: a member's point of its group's newest group point), or expiring: the next retention run merges it away. */
  tier: z.enum(POINT_TIERS),
  /** Bytes its own images occupy on the DR site (what `du` counts); null when the DR site does not say. */
  allocatedBytes: z.number().nullable(),
  consistency: z.enum(['application', 'crash']),
  consistencyIssue: z.object({ code: z.string(), message: z.string() }).nullable(),
  freezeWindowMs: z.number().nullable(),
  /** The consistency group instant it was taken in (a group point when every member has one of it); null: none. */
  groupInstant: z.string().nullable(),
  /** Images are paths of the DR host: an operator's token sees them, a tenant's does not. */
  disks: z.array(z.object({ disk: z.string(), sizeBytes: z.number(), image: z.string().optional() })),
});

const SyncBody = z
  .strictObject({
    full: z.boolean().optional().describe('Ship every allocated block, not only what changed'),
    compression: z.enum(['auto', 'off']).optional(),
  })
  .default({});

export const tenantOfProtection = (p: Protection): string | undefined => p.tenant;

function viewOf(p: Protection): z.infer<typeof ProtectionView> {
  return {
    name: p.name,
    tenant: p.tenant ?? null,
    source: p.source,
    target: { site: p.target.site, vm: p.target.vm },
    rpoSeconds: p.rpo / 1000,
    continuous: p.continuous,
    compression: p.compression,
  };
}

/** Every field named, in the schema's order: nothing of a point the schema does not show reaches a client. */
function pointView(point: RecoveryPoint & { tier: PointTier; allocatedBytes: number | null }, withImages: boolean): z.infer<typeof PointView> {
  return {
    id: point.id,
    protection: point.protection,
    seq: point.seq,
    time: point.time.toISOString(),
    committedAt: point.committedAt.toISOString(),
    kind: point.kind,
    checkpoint: point.checkpoint,
    since: point.since,
    bytesShipped: point.bytesShipped,
    dataBytes: point.dataBytes,
    zeroBytes: point.zeroBytes,
    pinned: point.pinned,
    replacedSource: point.replacedSource,
    tier: point.tier,
    allocatedBytes: point.allocatedBytes,
    // A point a receiver older than these fields answered with is crash-consistent.
    consistency: point.consistency ?? 'crash',
    consistencyIssue: point.consistencyIssue ?? null,
    freezeWindowMs: point.freezeWindowMs ?? null,
    groupInstant: point.groupInstant ?? null,
    disks: point.disks.map((d) => ({ disk: d.disk, sizeBytes: d.sizeBytes, ...(withImages ? { image: d.image } : {}) })),
  };
}

/**
 * The entry as the config's `protections:` list has it (durations as "15m"): it is checked by the
 * config's own schema and references when it is written, and a failure names its path there.
 */
const AddBody = z.looseObject({ name: SafeName }).describe("A protection, as an item of the config's `protections:` list");
const RemovedView = z.object({ protection: z.string(), kept: z.object({ site: z.string(), targetVm: z.string() }) });

const PauseBody = z.strictObject({ reason: z.string().max(500).optional() }).default({});
const PauseView = z.object({ protection: z.string(), paused: z.object({ by: z.string(), at: z.string(), reason: z.string().nullable() }).nullable() });

export function registerProtectionRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  /** Syncs and pauses are the business of the daemon whose loop replicates the protection: its source site's. */
  const replicatedHere = (p: Protection) => {
    if (ctx.site && p.source.site !== ctx.site) {
      throw new VmdrError('SYNC_ELSEWHERE', `protection "${p.name}" replicates from site "${p.source.site}": ask that site's vmdr serve`, {
        subject: { protection: p.name, site: p.source.site },
      });
    }
  };
  const pauseView = (name: string): z.infer<typeof PauseView> => {
    const held = pauseOf(ctx.state.db, name);
    return { protection: name, paused: held ? { by: held.pausedBy, at: held.pausedAt.toISOString(), reason: held.reason } : null };
  };

  api.post(
    '/protections/:name/pause',
    {
      config: { action: 'protection.pause' },
      schema: { tags: ['protections'], summary: 'Pause replication: no cycle and no sync until resumed', params: NameParams, body: PauseBody, response: { 200: PauseView } },
    },
    async (req) => {
      const p = find(req, req.params.name);
      const who = mayOperate(req);
      replicatedHere(p);
      pauseProtection(ctx.state.db, p.name, who.tokenName, req.body.reason);
      ctx.status.forget();
      return pauseView(p.name);
    },
  );

  api.post(
    '/protections/:name/resume',
    { config: { action: 'protection.resume' }, schema: { tags: ['protections'], summary: 'Resume replication paused by an operator', params: NameParams, response: { 200: PauseView } } },
    async (req) => {
      const p = find(req, req.params.name);
      mayOperate(req);
      replicatedHere(p);
      resumeProtection(ctx.state.db, p.name);
      ctx.status.forget();
      return pauseView(p.name);
    },
  );
  api.post(
    '/protections/:name/watch/clear',
    {
      config: { action: 'protection.watch-clear' },
      schema: {
        tags: ['protections'],
        summary: 'After an automatic failover: let the watch act on the protection again (as `vmdr watch clear`); 409 when nothing holds it',
        params: NameParams,
        response: { 200: z.object({ protection: z.string(), state: z.string(), detail: z.string().nullable(), at: z.string() }) },
      },
    },
    async (req) => {
      const p = find(req, req.params.name);
      const who = mayOperate(req);
      const event = clearHold(ctx.state, p, { actor: who.tokenId, actorName: `token ${who.tokenName}` });
      return { protection: p.name, state: event.state, detail: event.detail, at: event.at.toISOString() };
    },
  );

  // By its name or its source VM's, as the CLI takes it, among the caller's own only.
  const find = (req: Parameters<typeof visible>[0], name: string) => {
    const mine = visibleOnly(req, ctx.config.protections, tenantOfProtection);
    return visible(req, 'protection', name, mine.find((p) => p.name === name) ?? mine.find((p) => p.source.vm === name), tenantOfProtection);
  };

  api.post(
    '/protections',
    {
      config: { action: 'protection.add' },
      schema: {
        tags: ['protections'],
        summary:
          "Add a protection to the config (operators only: vmdr does not know which source VMs a tenant owns). The daemons start replicating it when they reload the config; the first cycle pre-stages its target",
        body: AddBody,
        response: { 201: ProtectionView },
      },
    },
    async (req, reply) => {
      operatorOnly(req);
      mayOperate(req);
      const added = await addProtection(ctx.file, req.body);
      req.objectId = added.name;
      await ctx.reloadConfig();
      return reply.code(201).send(viewOf(added));
    },
  );

  api.delete(
    '/protections/:name',
    {
      config: { action: 'protection.remove' },
      schema: {
        tags: ['protections'],
        summary: 'Take a protection out of the config: its replica, recovery points and target VM stay on the DR site. Refused while a plan starts it, a failover holds it or it is failed over',
        params: NameParams,
        response: { 200: RemovedView },
      },
    },
    async (req) => {
      const p = find(req, req.params.name);
      mayOperate(req);
      const removed = await removeProtection(ctx.file, ctx.state, p.name);
      await ctx.reloadConfig();
      return removed;
    },
  );

  api.get('/protections', { schema: { tags: ['protections'], summary: 'The protections the token may see', response: { 200: z.array(ProtectionView) } } }, async (req) =>
    visibleOnly(req, ctx.config.protections, tenantOfProtection).map(viewOf),
  );

  api.get('/protections/:name', { schema: { tags: ['protections'], params: NameParams, response: { 200: ProtectionView } } }, async (req) =>
    viewOf(find(req, req.params.name)),
  );

  api.get(
    '/protections/:name/points',
    { schema: { tags: ['recovery points'], summary: "A protection's recovery points, oldest first", params: NameParams, response: { 200: z.array(PointView) } } },
    async (req, reply) => {
      const p = find(req, req.params.name);
      const operator = principalOf(req).tenant === undefined;
      const { points: listed, space } = await recoveryPointsAndSpace(ctx, p);
      const tiers = tiersOf(listed, p, new Date(), await groupPointSeq(ctx, p, listed));
      const points: z.infer<typeof PointView>[] = listed.map((point, i) => pointView({ ...point, tier: tiers[i]!, allocatedBytes: space?.byPoint[point.id] ?? null }, operator));
      // Built field by field above: a portal polling points should not pay for zod re-checking each one.
      return sendJson(reply, JSON.stringify(points));
    },
  );

  api.post(
    '/protections/:name/sync',
    {
      config: { action: 'protection.sync' },
      schema: {
        tags: ['protections'],
        summary: 'Ship what changed now, as a new recovery point: answers 202 with the operation to follow',
        params: NameParams,
        body: SyncBody,
        response: { 202: OperationAccepted },
      },
    },
    async (req, reply) => {
      const p = find(req, req.params.name);
      const who = mayOperate(req);
      replicatedHere(p);
      const op = ctx.operations.start({
        kind: 'sync',
        subject: { protection: p.name },
        ...(p.tenant ? { tenant: p.tenant } : {}),
        startedBy: who.tokenId,
        describeError: describeOperationError,
        work: async (tools) => {
          const result = await syncAsAsked(ctx, { vm: p.name, ...req.body }, tools);
          ctx.onSynced?.(result);
          return result;
        },
      });
      return reply.code(202).send(operationAccepted(op));
    },
  );
}
