/**
 * Tenants through the API: an operator's token lists them all, a tenant's token sees its own
 * tenant only (and any other name answers as one that does not exist).
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Tenant } from '../../config/schema.js';
import { createTenant } from '../../tenants/create.js';
import { removeTenant } from '../../tenants/remove.js';
import { mayOperate, operatorOnly, visible, visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';
import { NameParams } from './protections.js';

const TenantView = z.object({
  name: z.string(),
  description: z.string().nullable(),
  quota: z.object({ storageGiB: z.number().nullable(), vms: z.number().nullable() }),
  networks: z.array(z.string()),
  protections: z.array(z.string()),
});

const CreateBody = z.strictObject({
  name: z.string().min(1).max(63),
  description: z.string().max(1000).optional(),
  storageQuotaGiB: z.number().positive().optional().describe('Replica bytes the tenant may keep on the DR site, in GiB'),
  vmQuota: z.number().int().positive().optional().describe('How many VMs the tenant may protect'),
  networks: z.array(z.string().min(1).max(63)).max(32).optional().describe("The tenant's words for its DR networks; one, `dr`, when none"),
});

const RemoveQuery = z.strictObject({ force: z.stringbool().default(false).describe("Also remove the tenant's plans and drills (never its protections)") });

export function registerTenantRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const view = (t: Tenant): z.infer<typeof TenantView> => ({
    name: t.name,
    description: t.description ?? null,
    quota: { storageGiB: t.quota?.storageGiB ?? null, vms: t.quota?.vms ?? null },
    networks: t.networks,
    protections: ctx.config.protections.filter((p) => p.tenant === t.name).map((p) => p.name),
  });
  const tenantItself = (t: Tenant) => t.name;

  api.get('/tenants', { schema: { tags: ['tenants'], response: { 200: z.array(TenantView) } } }, async (req) => visibleOnly(req, ctx.config.tenants, tenantItself).map(view));

  api.post(
    '/tenants',
    {
      config: { action: 'tenant.create' },
      schema: { tags: ['tenants'], summary: 'Make a tenant: its isolated DR networks on the DR sites, then its entry in the config (operators only)', body: CreateBody, response: { 201: TenantView } },
    },
    async (req, reply) => {
      operatorOnly(req);
      mayOperate(req);
      const made = await createTenant(ctx, req.body);
      req.objectId = made.tenant.name;
      await ctx.reloadConfig();
      return reply.code(201).send(view(ctx.config.tenants.find((t) => t.name === made.tenant.name) ?? made.tenant));
    },
  );

  api.delete(
    '/tenants/:name',
    { config: { action: 'tenant.remove' }, schema: { tags: ['tenants'], summary: 'Remove a tenant and its networks; refused while it owns protections (operators only)', params: NameParams, querystring: RemoveQuery } },
    async (req) => {
      operatorOnly(req);
      mayOperate(req);
      const removed = await removeTenant(ctx, req.params.name, { force: req.query.force });
      await ctx.reloadConfig();
      return removed;
    },
  );

  api.get('/tenants/:name', { schema: { tags: ['tenants'], params: NameParams, response: { 200: TenantView } } }, async (req) =>
    view(visible(req, 'tenant', req.params.name, ctx.config.tenants.find((t) => t.name === req.params.name), tenantItself)),
  );
}
