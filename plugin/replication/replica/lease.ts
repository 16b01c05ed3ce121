/**
 * One writer per protection's replica, across processes: the lease lives in the state file and
 * is renewed by a timer while its holder's event loop runs, so a process that dies or hangs
 * stops holding it (at once when it died on this host, after the TTL otherwise).
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { holdsLease, releaseLease, renewLease, tryAcquireLease } from '../../state/leases.js';
import type { StateStore } from '../../state/store.js';
import { ReplicaBusy } from './errors.js';

export const DEFAULT_LEASE_TTL_MS = 60_000;

export class ReplicaLease {
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly state: StateStore,
    readonly protection: string,
    readonly holder: string,
    private readonly ttlMs: number,
  ) {
    this.timer = setInterval(() => this.renew(), Math.max(100, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  /** The lease, or undefined when a live holder has it. */
  static tryAcquire(state: StateStore, protection: string, purpose: string, ttlMs = DEFAULT_LEASE_TTL_MS): ReplicaLease | undefined {
    const holder = `${purpose}:${randomUUID()}`;
    const result = tryAcquireLease(state.db, protection, holder, purpose, ttlMs);
    return result.acquired ? new ReplicaLease(state, protection, holder, ttlMs) : undefined;
  }

  static acquire(state: StateStore, protection: string, purpose: string, ttlMs = DEFAULT_LEASE_TTL_MS): ReplicaLease {
    const holder = `${purpose}:${randomUUID()}`;
    const result = tryAcquireLease(state.db, protection, holder, purpose, ttlMs);
    if (!result.acquired) {
      const h = result.heldBy;
      throw new ReplicaBusy(protection, `${h.purpose} in process ${h.pid} on ${h.host} holds it until ${new Date(h.expiresAtMs).toISOString()}`);
    }
    return new ReplicaLease(state, protection, holder, ttlMs);
  }

  /**
   * The lease once a live holder lets go (a cycle ends, the next begins a moment later), checked
   * every 200 ms; past `timeoutMs`, ReplicaBusy naming the holder.
   */
  static async waitFor(state: StateStore, protection: string, purpose: string, timeoutMs: number, signal?: AbortSignal): Promise<ReplicaLease> {
    for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; ) {
      const lease = ReplicaLease.tryAcquire(state, protection, purpose);
      if (lease) return lease;
      await delay(200, undefined, { signal });
    }
    return ReplicaLease.acquire(state, protection, purpose);
  }

  get held(): boolean {
    return this.state.db.open && holdsLease(this.state.db, this.protection, this.holder);
  }

  private renew(): void {
    // A closed store (process shutting down) or a lost lease ends renewal; commit checks `held`.
    if (!this.state.db.open || !renewLease(this.state.db, this.protection, this.holder, this.ttlMs)) this.stopRenewing();
  }

  private stopRenewing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  release(): void {
    this.stopRenewing();
    if (this.state.db.open) releaseLease(this.state.db, this.protection, this.holder);
  }
}
