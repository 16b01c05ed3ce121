/** The audit records, for operators: who changed what, when, and how it ended. */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { listAudit } from '../../state/audit.js';
import { operatorOnly } from '../auth.js';
import type { ApiContext } from '../server.js';

const AuditQuery = z.strictObject({
  tenant: z.string().min(1).max(128).optional(),
  since: z.iso.datetime({ offset: true }).optional().describe('Only records at or after this instant (ISO 8601)'),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

export function registerAuditRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/audit',
    { schema: { tags: ['audit'], summary: 'Audit records of mutating calls, newest first (operator tokens only)', querystring: AuditQuery } },
    async (req) => {
      operatorOnly(req);
      const { tenant, since, limit } = req.query;
      return listAudit(ctx.state, { ...(tenant ? { tenant } : {}), ...(since ? { since: new Date(since) } : {}), limit });
    },
  );
}
