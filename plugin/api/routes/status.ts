/**
 * `vmdr status` through the API: every protection the token may see, as `vmdr status --json` shows
 * it, from a look at most a couple of seconds old (status-cache.ts), and when that look was taken.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';

export function registerStatusRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/status',
    {
      schema: {
        tags: ['status'],
        summary: 'Every protection the token may see: its VMs, role, newest recovery point, lag against its RPO, last sync, drift',
        response: { 200: z.object({ takenAt: z.string(), protections: z.array(z.looseObject({ protection: z.string(), tenant: z.string().nullable() })) }) },
      },
    },
    async (req) => {
      const { rows, takenAt } = await ctx.status.read();
      // Rows are what `vmdr status --json` prints: the schema documents their key, not every field.
      const protections = visibleOnly(req, rows, (r) => r.tenant ?? undefined) as unknown as { protection: string; tenant: string | null }[];
      return { takenAt: takenAt.toISOString(), protections };
    },
  );
}
