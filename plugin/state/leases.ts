/**
 * Exclusive leases on a protection's replica, held across processes through the state file.
 * A lease ends when released, when it expires (its holder stopped renewing it), or at once when
 * its holder was a process on this host that no longer exists (kill -9 leaves no chance to release).
 */
import { hostname } from 'node:os';
import type { Database } from './store.js';

export interface LeaseRow {
  protection: string;
  holder: string;
  host: string;
  pid: number;
  purpose: string;
  expiresAtMs: number;
}

interface RawLease {
  protection: string;
  holder: string;
  host: string;
  pid: number;
  purpose: string;
  expires_at_ms: number;
}

export function currentLease(db: Database, protection: string): LeaseRow | undefined {
  const r = db.prepare('SELECT * FROM replica_leases WHERE protection = ?').get(protection) as RawLease | undefined;
  return r && { protection: r.protection, holder: r.holder, host: r.host, pid: r.pid, purpose: r.purpose, expiresAtMs: r.expires_at_ms };
}

export function leaseIsLive(lease: LeaseRow, nowMs: number): boolean {
  if (lease.expiresAtMs <= nowMs) return false;
  if (lease.host !== hostname()) return true;
  return processExists(lease.pid);
}

export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lease unless a live holder has it; returns that holder then. Runs in an immediate
 * transaction so two processes cannot both see the lease free.
 */
export function tryAcquireLease(
  db: Database,
  protection: string,
  holder: string,
  purpose: string,
  ttlMs: number,
): { acquired: true } | { acquired: false; heldBy: LeaseRow } {
  return db
    .transaction(() => {
      const now = Date.now();
      const existing = currentLease(db, protection);
      if (existing && leaseIsLive(existing, now)) return { acquired: false as const, heldBy: existing };
      db.prepare(
        `INSERT INTO replica_leases (protection, holder, host, pid, purpose, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (protection) DO UPDATE SET holder = excluded.holder, host = excluded.host, pid = excluded.pid,
           purpose = excluded.purpose, expires_at_ms = excluded.expires_at_ms`,
      ).run(protection, holder, hostname(), process.pid, purpose, now + ttlMs);
      return { acquired: true as const };
    })
    .immediate();
}

/** Returns false when the lease is no longer this holder's. */
export function renewLease(db: Database, protection: string, holder: string, ttlMs: number): boolean {
  return db.prepare('UPDATE replica_leases SET expires_at_ms = ? WHERE protection = ? AND holder = ?').run(Date.now() + ttlMs, protection, holder).changes > 0;
}

export function holdsLease(db: Database, protection: string, holder: string): boolean {
  return db.prepare('SELECT 1 FROM replica_leases WHERE protection = ? AND holder = ? AND expires_at_ms > ?').get(protection, holder, Date.now()) !== undefined;
}

export function releaseLease(db: Database, protection: string, holder: string): void {
  db.prepare('DELETE FROM replica_leases WHERE protection = ? AND holder = ?').run(protection, holder);
}

export function protectionsWithLeases(db: Database): string[] {
  return (db.prepare('SELECT protection FROM replica_leases').all() as { protection: string }[]).map((r) => r.protection);
}
