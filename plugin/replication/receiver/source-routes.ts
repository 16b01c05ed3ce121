/**
 * The receiver's routes for a protection's source identity: which VM (UUID) its recovery points
 * are of, recording it (at protect, or adopted by the first sync of a protection that has none),
 * replacing it (`vmdr protect --replace-source`, which keeps every existing point for the old VM),
 * and releasing kept points. A source host reaches the DR site's state file only through these.
 * Registered by startReceiver after its own routes: registerSourceRoutes(app, { protectionOf, replicas });
 * protectionOf answers only the protection's source site (requirePeer).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Protection } from '../../config/schema.js';
import { releaseKept, toRecordedSource } from '../../protections/source-record.js';
import { recordedSource, recordSource } from '../../state/sources.js';
import type { ReplicaStore } from '../replica/store.js';
import type { TenantQuotas } from '../../tenants/quotas.js';

const RecordBody = z.strictObject({
  uuid: z.string().min(1).max(128),
  vm: z.string().min(1).max(256),
  replace: z.boolean().default(false),
});

const ReleaseBody = z.strictObject({
  points: z.union([z.literal('replaced'), z.array(z.string().min(1).max(64)).min(1).max(10_000)]),
});

export function registerSourceRoutes(
  app: FastifyInstance,
  ctx: { protectionOf: (req: FastifyRequest, name: string) => Protection; replicas: ReplicaStore; quotas: TenantQuotas },
): void {
  const db = () => ctx.replicas.state.db;

  app.get<{ Params: { protection: string } }>('/v1/protections/:protection/source', async (req) => {
    const p = ctx.protectionOf(req, req.params.protection);
    const row = recordedSource(db(), p.name);
    return { source: row ? toRecordedSource(row) : null };
  });

  app.put<{ Params: { protection: string } }>('/v1/protections/:protection/source', async (req) => {
    const p = ctx.protectionOf(req, req.params.protection);
    const body = RecordBody.parse(req.body);
    // The first thing `vmdr protect` writes here: a VM beyond its tenant's quota is refused before its target is staged.
    await ctx.quotas.admitVm(p);
    const r = recordSource(db(), p.name, { uuid: body.uuid, name: body.vm }, { replace: body.replace });
    return {
      outcome: r.outcome,
      source: toRecordedSource(r.source),
      previous: r.outcome === 'replaced' && r.previous ? toRecordedSource(r.previous) : null,
      kept: r.outcome === 'replaced' ? r.kept.map((seq) => `rp-${seq}`) : [],
    };
  });

  app.post<{ Params: { protection: string } }>('/v1/protections/:protection/points/release', async (req) => {
    const p = ctx.protectionOf(req, req.params.protection);
    const body = ReleaseBody.parse(req.body);
    return { released: releaseKept(ctx.replicas, p.name, body.points) };
  });
}
