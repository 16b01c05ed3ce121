/**
 * Why a request's token was refused, and the mistakes made when managing tokens. A refusal carries
 * the HTTP status it answers with: 401 when the caller is not known (no token, a token that is
 * not valid, expired or revoked), 403 when it is known and may not do this.
 */
import { VmdrError } from '../../hypervisors/errors.js';

export abstract class TokenRefused extends VmdrError {
  abstract readonly status: 401 | 403;
}

export class TokenMissing extends TokenRefused {
  readonly status = 401;
  constructor() {
    super('TOKEN_MISSING', 'no token: send the header "Authorization: Bearer <token>"', {
      remedy: '`vmdr token create` on the daemon host makes one; a client reads it from VMDR_TOKEN, VMDR_TOKEN_FILE or --token-file',
    });
  }
}

/**
 * Malformed, unknown id, or wrong secret: one class, one message, so an answer never tells which
 * (nor whether a token id exists).
 */
export class TokenInvalid extends TokenRefused {
  readonly status = 401;
  constructor() {
    super('TOKEN_INVALID', 'the token is not valid');
  }
}

export class TokenExpired extends TokenRefused {
  readonly status = 401;
  constructor(id: string, at: Date) {
    super('TOKEN_EXPIRED', `token ${id} expired at ${at.toISOString()}`, { subject: { token: id }, remedy: 'ask an operator for a new token' });
  }
}

export class TokenRevoked extends TokenRefused {
  readonly status = 401;
  constructor(id: string) {
    super('TOKEN_REVOKED', `token ${id} was revoked`, { subject: { token: id }, remedy: 'ask an operator for a new token' });
  }
}

/** A read token asked for something that changes an object. */
export class TokenReadOnly extends TokenRefused {
  readonly status = 403;
  constructor(id: string) {
    super('TOKEN_READ_ONLY', `token ${id} may only read: this needs a token of role "operate"`, { subject: { token: id } });
  }
}

/**
 * A token id that the store does not have. Said as the API says any object it does not have (or
 * may not show): `no token "ID"`, no remedy, so a tenant cannot tell another tenant's token from
 * none.
 */
export class TokenUnknown extends VmdrError {
  constructor(id: string) {
    super('TOKEN_UNKNOWN', `no token ${JSON.stringify(id)}`, { subject: { token: id } });
  }
}

/** A token's name or expiry that cannot be used, said of the named field. */
export class TokenRequestInvalid extends VmdrError {
  constructor(field: string, problem: string) {
    super('TOKEN_REQUEST_INVALID', `${field}: ${problem}`, { subject: { field } });
  }
}

/**
 * The config has no tenant of this name. With `file` (the CLI) the line names the config; without
 * (the API), it reads as the API's answer for any object it does not have, and names no path of
 * this host.
 */
export class TenantUnknown extends VmdrError {
  constructor(tenant: string, file?: string) {
    super('TENANT_UNKNOWN', `${file !== undefined ? `${file}: ` : ''}no tenant ${JSON.stringify(tenant)}`, {
      subject: { tenant, ...(file !== undefined ? { file } : {}) },
      ...(file !== undefined ? { remedy: '`vmdr tenant list` shows the tenants' } : {}),
    });
  }
}

/** A token file that others may read (or that cannot be read as one), or a token variable that holds no token. */
export class TokenSourceRefused extends VmdrError {
  constructor(code: 'TOKEN_FILE_UNSAFE' | 'TOKEN_FILE_UNREADABLE' | 'TOKEN_SOURCE_INVALID' | 'TOKEN_SOURCE_AMBIGUOUS', message: string, subject: { file?: string } = {}, remedy?: string) {
    super(code, message, { subject, ...(remedy ? { remedy } : {}) });
  }
}
