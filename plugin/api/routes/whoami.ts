/**
 * The token a request carries, as its holder may know it: its name, its role and its tenant (null:
 * an operator's, which sees every tenant). A portal or the status page says with it whose objects it
 * shows; the secret and the token's id stay out of the answer.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { principalOf } from '../auth.js';
import type { ApiContext } from '../server.js';

const WhoAmI = z.object({ token: z.string(), role: z.enum(['read', 'operate']), tenant: z.string().nullable() });

export function registerWhoAmIRoute(app: FastifyInstance, _ctx: ApiContext): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/whoami',
    { schema: { tags: ['tokens'], summary: "The token's name, role and tenant (null: an operator's, which sees every tenant)", response: { 200: WhoAmI } } },
    async (req) => {
      const p = principalOf(req);
      return { token: p.tokenName, role: p.role, tenant: p.tenant ?? null };
    },
  );
}
