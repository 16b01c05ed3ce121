/**
 * The role of each protection on its DR site: `replicating` (the default, no row) or `failed-over`
 * (its target runs as production; the replica takes no new recovery point until a failback or a
 * revert gives it back). The replica store refuses new points by this row, whoever sends them.
 */
import type { Database } from './store.js';

export type ProtectionRole = 'replicating' | 'failed-over';

export interface RoleRow {
  protection: string;
  role: ProtectionRole;
  failover: string | null;
  point: string | null;
  changedAtMs: number;
}

interface RawRole {
  protection: string;
  role: ProtectionRole;
  failover: string | null;
  point: string | null;
  changed_at_ms: number;
}

export function roleOf(db: Database, protection: string): RoleRow {
  const r = db.prepare('SELECT * FROM protection_roles WHERE protection = ?').get(protection) as RawRole | undefined;
  if (!r) return { protection, role: 'replicating', failover: null, point: null, changedAtMs: 0 };
  return { protection: r.protection, role: r.role, failover: r.failover, point: r.point, changedAtMs: r.changed_at_ms };
}

export function setRole(db: Database, protection: string, role: ProtectionRole, by: { failover?: string; point?: string } = {}): void {
  db.prepare(
    `INSERT INTO protection_roles (protection, role, failover, point, changed_at_ms) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (protection) DO UPDATE SET role = excluded.role, failover = excluded.failover, point = excluded.point,
       changed_at_ms = excluded.changed_at_ms`,
  ).run(protection, role, by.failover ?? null, by.point ?? null, Date.now());
}
