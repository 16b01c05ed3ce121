/**
 * Rows of the API tokens. This module only reads and writes the table; plugin/tenants/tokens.ts
 * owns what a token is (its secret, its format, how it is checked). Nothing here ever sees a
 * secret: only its SHA-256.
 */
import { preparedOnce, type StateStore } from './store.js';

export type TokenRole = 'read' | 'operate';

export interface TokenRow {
  id: string;
  name: string;
  /** Unset: an operator token. */
  tenant?: string;
  role: TokenRole;
  secretSha256: Buffer;
  createdAtMs: number;
  expiresAtMs?: number;
  revokedAtMs?: number;
}

interface RawToken {
  id: string;
  name: string;
  tenant: string | null;
  role: TokenRole;
  secret_sha256: Buffer;
  created_at_ms: number;
  expires_at_ms: number | null;
  revoked_at_ms: number | null;
}

const fromRaw = (r: RawToken): TokenRow => ({
  id: r.id,
  name: r.name,
  ...(r.tenant !== null ? { tenant: r.tenant } : {}),
  role: r.role,
  secretSha256: r.secret_sha256,
  createdAtMs: r.created_at_ms,
  ...(r.expires_at_ms !== null ? { expiresAtMs: r.expires_at_ms } : {}),
  ...(r.revoked_at_ms !== null ? { revokedAtMs: r.revoked_at_ms } : {}),
});

/** Returns false when the id is taken (the caller draws another). */
export function insertToken(store: StateStore, row: Omit<TokenRow, 'revokedAtMs'>): boolean {
  const result = store.db
    .prepare(
      `INSERT INTO tokens (id, name, tenant, role, secret_sha256, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO NOTHING`,
    )
    .run(row.id, row.name, row.tenant ?? null, row.role, row.secretSha256, row.createdAtMs, row.expiresAtMs ?? null);
  return result.changes === 1;
}

// Every API request looks its token up.
export function tokenRow(store: StateStore, id: string): TokenRow | undefined {
  const r = preparedOnce<[string], RawToken>(store.db, 'SELECT * FROM tokens WHERE id = ?').get(id);
  return r && fromRaw(r);
}

/** Oldest first; `tenant` given: that tenant's tokens only. */
export function tokenRows(store: StateStore, filter: { tenant?: string } = {}): TokenRow[] {
  const rows =
    filter.tenant === undefined
      ? store.db.prepare<[], RawToken>('SELECT * FROM tokens ORDER BY created_at_ms, rowid').all()
      : store.db.prepare<[string], RawToken>('SELECT * FROM tokens WHERE tenant = ? ORDER BY created_at_ms, rowid').all(filter.tenant);
  return rows.map(fromRaw);
}

/** Marks the tokens revoked at `atMs` (those revoked already keep their time); returns how many changed. */
export function markRevoked(store: StateStore, which: { id: string } | { tenant: string }, atMs: number): number {
  const [column, value] = 'id' in which ? ['id', which.id] : ['tenant', which.tenant];
  return store.db.prepare(`UPDATE tokens SET revoked_at_ms = ? WHERE ${column} = ? AND revoked_at_ms IS NULL`).run(atMs, value).changes;
}
