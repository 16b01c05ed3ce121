/**
 * Every call that changes something leaves an audit record (who, what, when, result) in the state
 * file, whether it succeeded, was refused or failed. Reads leave none: they change nothing and would
 * let any token grow the file. A request refused before its token was known has no "who" and goes to
 * the request log only, for the same reason.
 */
import type { FastifyInstance } from 'fastify';
import type { StateStore } from '../state/store.js';
import { recordAudit } from '../state/audit.js';

declare module 'fastify' {
  interface FastifyReply {
    /** The error code the request was answered with, for its audit record. */
    errorCode?: string;
  }
  interface FastifyContextConfig {
    /** What the route does, in the audit's words ("protection.sync"). */
    action?: string;
  }
}

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function recordMutations(app: FastifyInstance, state: StateStore): void {
  app.decorateReply('errorCode', undefined);
  app.addHook('onResponse', async (req, reply) => {
    if (!MUTATING.has(req.method) || !req.principal) return;
    const params = (req.params ?? {}) as Record<string, string | undefined>;
    const status = reply.statusCode;
    recordAudit(state, {
      actor: req.principal.tokenId,
      actorName: req.principal.tokenName,
      ...((req.objectTenant ?? req.principal.tenant) ? { tenant: req.objectTenant ?? req.principal.tenant } : {}),
      action: req.routeOptions.config.action ?? `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`,
      ...((params.name ?? params.id ?? req.objectId) ? { object: params.name ?? params.id ?? req.objectId } : {}),
      result: status < 400 ? 'ok' : status < 500 ? 'refused' : 'failed',
      ...(reply.errorCode ? { code: reply.errorCode } : {}),
      at: new Date(),
    });
  });
}
