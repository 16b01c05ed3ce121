/**
 * API tokens: who a request is (a principal), and what it may see and change.
 *
 * A token is `vmdr_<id>_<secret>`: the id is public (lists, the audit record, log lines name it)
 * and finds the row; the secret is 256 random bits, shown once at creation and kept only as its
 * SHA-256. A hash of a secret that random needs no slow KDF: nobody can guess one. Every request
 * reads its token's row again, so a revoke or an expiry holds from the very next request.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { NAME_PATTERN } from '../config/schema.js';
import type { StateStore } from '../state/store.js';
import { insertToken, markRevoked, tokenRow, tokenRows, type TokenRole, type TokenRow } from '../state/tokens.js';
import { TenantUnknown, TokenExpired, TokenInvalid, TokenMissing, TokenReadOnly, TokenRequestInvalid, TokenRevoked, TokenUnknown } from './token-errors.js';

export type { TokenRole };

/** Who a request is. `tenant` unset: an operator, who sees every tenant's objects. */
export interface Principal {
  tokenId: string;
  tokenName: string;
  role: TokenRole;
  tenant?: string;
}

/** A token as lists and answers show it: never its secret nor its hash. */
export interface TokenRecord {
  id: string;
  name: string;
  tenant?: string;
  role: TokenRole;
  createdAt: Date;
  expiresAt?: Date;
  revokedAt?: Date;
}

export const TOKEN_PREFIX = 'vmdr_';
const SECRET_BYTES = 32;
const ID_BYTES = 6;
/** The id is hex, so the first "_" after it ends it even though base64url secrets may hold "_". */
const TOKEN_PATTERN = /^vmdr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
/** Longer than any token with its scheme: not worth a look. */
const MAX_HEADER_LENGTH = 200;

const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();
/** Compared against when the id is unknown, so that case costs what a wrong secret costs. */
const NO_HASH = sha256(Buffer.from('no token has this hash'));

const recordOf = (r: TokenRow): TokenRecord => ({
  id: r.id,
  name: r.name,
  ...(r.tenant !== undefined ? { tenant: r.tenant } : {}),
  role: r.role,
  createdAt: new Date(r.createdAtMs),
  ...(r.expiresAtMs !== undefined ? { expiresAt: new Date(r.expiresAtMs) } : {}),
  ...(r.revokedAtMs !== undefined ? { revokedAt: new Date(r.revokedAtMs) } : {}),
});

/** The id and secret of a token's text; undefined when it is not one. */
export function parseToken(text: string): { id: string; secret: Buffer } | undefined {
  const m = TOKEN_PATTERN.exec(text);
  if (!m) return undefined;
  const secret = Buffer.from(m[2]!, 'base64url');
  // 43 characters carry 258 bits: only the one spelling of the 256 that were drawn is accepted.
  if (secret.length !== SECRET_BYTES || secret.toString('base64url') !== m[2]) return undefined;
  return { id: m[1]!, secret };
}

/**
 * Makes a token. The returned `token` is the only time its secret exists outside the caller's
 * hands: nothing keeps or logs it.
 */
export function createToken(
  store: StateStore,
  request: { name: string; tenant?: string; role: TokenRole; expiresAt?: Date },
  now = new Date(),
): { token: string; record: TokenRecord } {
  if (!NAME_PATTERN.test(request.name)) throw new TokenRequestInvalid('name', `${JSON.stringify(request.name)} is not a name of letters, digits, ".", "-" or "_" (at most 63)`);
  if (request.tenant !== undefined && !NAME_PATTERN.test(request.tenant)) throw new TokenRequestInvalid('tenant', `${JSON.stringify(request.tenant)} is not a tenant name`);
  if (request.role !== 'read' && request.role !== 'operate') throw new TokenRequestInvalid('role', `${JSON.stringify(request.role)} is not "read" or "operate"`);
  if (request.expiresAt !== undefined && !(request.expiresAt.getTime() > now.getTime())) {
    throw new TokenRequestInvalid('expiresAt', `${request.expiresAt.toISOString()} is not in the future`);
  }
  const secret = randomBytes(SECRET_BYTES);
  for (;;) {
    const row = {
      id: randomBytes(ID_BYTES).toString('hex'),
      name: request.name,
      ...(request.tenant !== undefined ? { tenant: request.tenant } : {}),
      role: request.role,
      secretSha256: sha256(secret),
      createdAtMs: now.getTime(),
      ...(request.expiresAt !== undefined ? { expiresAtMs: request.expiresAt.getTime() } : {}),
    };
    // 48 random bits: a taken id is next to impossible, and then simply drawn again.
    if (insertToken(store, row)) return { token: `${TOKEN_PREFIX}${row.id}_${secret.toString('base64url')}`, record: recordOf(row) };
  }
}

/** Oldest first; `tenant`: that tenant's only. Revoked and expired tokens are listed too, marked. */
export function listTokens(store: StateStore, filter: { tenant?: string } = {}): TokenRecord[] {
  return tokenRows(store, filter).map(recordOf);
}

/** The token of this id, or undefined (an API route then answers as for any object it does not show). */
export function findToken(store: StateStore, id: string): TokenRecord | undefined {
  const row = tokenRow(store, id);
  return row && recordOf(row);
}

/** Revokes a token from now on; revoking it again changes nothing (`alreadyRevoked`). */
export function revokeToken(store: StateStore, id: string, now = new Date()): { record: TokenRecord; alreadyRevoked: boolean } {
  return store.db
    .transaction(() => {
      const changed = markRevoked(store, { id }, now.getTime());
      const row = tokenRow(store, id);
      if (!row) throw new TokenUnknown(id);
      return { record: recordOf(row), alreadyRevoked: changed === 0 };
    })
    .immediate();
}

/** Revokes every token of a tenant (a tenant being removed); returns how many were in use. */
export function revokeTenantTokens(store: StateStore, tenant: string, now = new Date()): number {
  return markRevoked(store, { tenant }, now.getTime());
}

/**
 * Who sends `authorization` ("Bearer vmdr_…"). The secret is checked before anything else is
 * said of the token: only its holder learns that it expired or was revoked.
 */
export function authenticate(store: StateStore, authorization: string | undefined, now = new Date()): Principal {
  if (authorization === undefined || authorization.trim() === '') throw new TokenMissing();
  const m = authorization.length <= MAX_HEADER_LENGTH ? /^Bearer +(\S+) *$/i.exec(authorization) : null;
  const presented = m ? parseToken(m[1]!) : undefined;
  const row = presented && tokenRow(store, presented.id);
  // Hashed and compared whatever was found, in constant time: the answer's timing says nothing either.
  const matches = timingSafeEqual(sha256(presented?.secret ?? Buffer.alloc(SECRET_BYTES)), row?.secretSha256 ?? NO_HASH);
  if (!row || !matches) throw new TokenInvalid();
  if (row.revokedAtMs !== undefined) throw new TokenRevoked(row.id);
  if (row.expiresAtMs !== undefined && now.getTime() >= row.expiresAtMs) throw new TokenExpired(row.id, new Date(row.expiresAtMs));
  return { tokenId: row.id, tokenName: row.name, role: row.role, ...(row.tenant !== undefined ? { tenant: row.tenant } : {}) };
}

/** Refuses a read token where `role` is `operate`. */
export function requireRole(principal: Principal, role: TokenRole): void {
  if (role === 'operate' && principal.role !== 'operate') throw new TokenReadOnly(principal.tokenId);
}

/**
 * Whether the principal may see an object of `tenantOfObject`: an operator sees all; a tenant
 * token only its tenant's; an object of no tenant is the operator's alone. An API answers an
 * object it may not see exactly as one that does not exist.
 */
export function canSee(principal: Principal, tenantOfObject: string | undefined): boolean {
  return principal.tenant === undefined || (tenantOfObject !== undefined && principal.tenant === tenantOfObject);
}

/** Refuses a tenant the config does not declare; `file` (the CLI's) is named in the error. */
export function requireTenant(config: Config, tenant: string, file?: string): void {
  if (!config.tenants.some((t) => t.name === tenant)) throw new TenantUnknown(tenant, file);
}

/** A token as the CLI's JSON and the API show it: never its secret, nor its hash. */
export function tokenView(t: TokenRecord, now = new Date()) {
  return {
    id: t.id,
    name: t.name,
    tenant: t.tenant ?? null,
    role: t.role,
    createdAt: t.createdAt.toISOString(),
    expiresAt: t.expiresAt?.toISOString() ?? null,
    revokedAt: t.revokedAt?.toISOString() ?? null,
    state: tokenState(t, now),
  };
}

/** `active`, `expired` or `revoked`, at `now`. */
export function tokenState(record: TokenRecord, now = new Date()): 'active' | 'expired' | 'revoked' {
  if (record.revokedAt) return 'revoked';
  return record.expiresAt && now.getTime() >= record.expiresAt.getTime() ? 'expired' : 'active';
}
