/**
 * Who a request of the API comes from, and what it may see. Every route but the health check and
 * the OpenAPI document needs a bearer token (plugin/tenants/tokens.ts); the principal it stands for
 * rides on the request. A tenant's token sees only its tenant's objects: an object of another tenant
 * is answered exactly like one that does not exist (same status, same body), so a tenant learns
 * nothing of the others, not even their names.
 */
import type { FastifyRequest } from 'fastify';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Principal } from '../tenants/tokens.js';
import { canSee, requireRole } from '../tenants/tokens.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the authentication hook on every route that needs a token. */
    principal?: Principal;
    /** The tenant of the object the request concerns (for its audit record), once a route found it. */
    objectTenant?: string;
    /** The object a route made (a new token's id), for its audit record. */
    objectId?: string;
  }
}

/** What a route answers for an object that does not exist or is not the caller's to see: one answer for both. */
export class ApiNotFound extends VmdrError {
  constructor(kind: string, name: string) {
    super(`${kind.toUpperCase()}_UNKNOWN`, `no ${kind} "${name}"`, { subject: { [kind]: name } });
  }
}

export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw new VmdrError('TOKEN_MISSING', 'this route needs a bearer token', { subject: {} });
  return req.principal;
}

/** The object when the caller may see it; otherwise the same 404 as for an object that does not exist. */
export function visible<T>(req: FastifyRequest, kind: string, name: string, found: T | undefined, tenantOf: (t: T) => string | undefined): T {
  if (found === undefined || !canSee(principalOf(req), tenantOf(found))) throw new ApiNotFound(kind, name);
  const tenant = tenantOf(found);
  if (tenant !== undefined) req.objectTenant = tenant;
  return found;
}

/** The objects of a list the caller may see. */
export function visibleOnly<T>(req: FastifyRequest, all: T[], tenantOf: (t: T) => string | undefined): T[] {
  const p = principalOf(req);
  return all.filter((x) => canSee(p, tenantOf(x)));
}

/** Refuses a read-only token on a route that changes something. */
export function mayOperate(req: FastifyRequest): Principal {
  const p = principalOf(req);
  requireRole(p, 'operate');
  return p;
}

/** Operator-only routes (tokens of every tenant, the audit): a tenant's token is answered as for a route that does not exist. */
export function operatorOnly(req: FastifyRequest): Principal {
  const p = principalOf(req);
  if (p.tenant !== undefined) throw new VmdrError('NOT_FOUND', 'no such route', { subject: {} });
  return p;
}
