/**
 * Tenants through the API: an operator's token lists them all, a tenant's token sees its own
 * tenant only (and any other name answers as one that does not exist).
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Tenant } from '../../config/schema.js';
import { visible, visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';
import { NameParams } from './protections.js';

const TenantView = z.object({
  name: z.string(),
  description: z.string().nullable(),
  quota: z.object({ storageGiB: z.number().nullable(), vms: z.number().nullable() }),
  networks: z.array(z.string()),
  protections: z.array(z.string()),
});

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

  api.get('/tenants/:name', { schema: { tags: ['tenants'], params: NameParams, response: { 200: TenantView } } }, async (req) =>
    view(visible(req, 'tenant', req.params.name, ctx.config.tenants.find((t) => t.name === req.params.name), tenantItself)),
  );
}
