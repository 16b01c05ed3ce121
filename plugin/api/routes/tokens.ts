/**
 * Tokens through the API. An operator's token manages every token; a tenant's token manages its
 * own tenant's only and can make no operator token, nor one of another tenant (that tenant answers
 * as one that does not exist). A new token's secret is in the 201 answer and nowhere else, ever.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { durationBetween, NAME_PATTERN } from '../../config/schema.js';
import { createToken, findToken, listTokens, revokeToken, tokenView, type TokenRecord } from '../../tenants/tokens.js';
import { ApiNotFound, mayOperate, visible, visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';

const TokenView = z.object({
  id: z.string(),
  name: z.string(),
  tenant: z.string().nullable(),
  role: z.enum(['read', 'operate']),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
  state: z.enum(['active', 'expired', 'revoked']),
});

const name = z.string().regex(NAME_PATTERN, 'a name of letters, digits, ".", "-" or "_" (at most 63)');

const CreateBody = z.strictObject({
  name,
  /** Absent: an operator's token (operators only); a tenant's token may name only its own tenant. */
  tenant: name.optional(),
  role: z.enum(['read', 'operate']).default('read'),
  expires: durationBetween('1m', '3650d').optional().describe('How long it is valid, e.g. "90d"; absent: until revoked'),
});

const IdParams = z.strictObject({ id: z.string().regex(/^[0-9a-f]{1,32}$/, 'a token id (hex)') });

const tenantOfToken = (t: TokenRecord) => t.tenant;

export function registerTokenRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const api = app.withTypeProvider<ZodTypeProvider>();

  api.get('/tokens', { schema: { tags: ['tokens'], summary: "The tokens the caller may manage (never a secret)", response: { 200: z.array(TokenView) } } }, async (req) =>
    visibleOnly(req, listTokens(ctx.state), tenantOfToken).map((t) => tokenView(t)),
  );

  api.post(
    '/tokens',
    {
      config: { action: 'token.create' },
      schema: { tags: ['tokens'], summary: 'Make a token: its secret is in this answer only', body: CreateBody, response: { 201: TokenView.extend({ token: z.string() }) } },
    },
    async (req, reply) => {
      const who = mayOperate(req);
      const tenant = req.body.tenant ?? who.tenant;
      // A tenant's token asking for another tenant (or for an operator's token) learns nothing of it.
      if (who.tenant !== undefined && tenant !== who.tenant) throw new ApiNotFound('tenant', req.body.tenant ?? '(none)');
      if (tenant !== undefined) visible(req, 'tenant', tenant, ctx.config.tenants.find((t) => t.name === tenant), (t) => t.name);
      const made = createToken(ctx.state, {
        name: req.body.name,
        role: req.body.role,
        ...(tenant !== undefined ? { tenant } : {}),
        ...(req.body.expires !== undefined ? { expiresAt: new Date(Date.now() + req.body.expires) } : {}),
      });
      req.objectId = made.record.id;
      return reply.code(201).send({ ...tokenView(made.record), token: made.token });
    },
  );

  api.delete(
    '/tokens/:id',
    { config: { action: 'token.revoke' }, schema: { tags: ['tokens'], summary: 'Revoke a token from its next request on', params: IdParams, response: { 200: TokenView.extend({ alreadyRevoked: z.boolean() }) } } },
    async (req) => {
      mayOperate(req);
      visible(req, 'token', req.params.id, findToken(ctx.state, req.params.id), tenantOfToken);
      const { record, alreadyRevoked } = revokeToken(ctx.state, req.params.id);
      return { ...tokenView(record), alreadyRevoked };
    },
  );
}
