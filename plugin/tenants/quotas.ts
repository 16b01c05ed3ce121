/**
 * A tenant's quotas, as the DR site enforces them: it holds the replicas, so it knows what they
 * occupy and how many VMs they are, whatever the source sites believe.
 *
 * - quota.storageGiB: a cycle is admitted only when the bytes the tenant's replicas use now, plus
 *   the cycles of the tenant already admitted and still being written, plus this cycle's announced
 *   size (the stream header's dataBytes), stay within it. It is decided from the stream's header,
 *   before the cycle waits for its turn and before any file exists: a refused cycle commits
 *   nothing, and the replica stays at its newest point.
 * - quota.vms: a protection's first recovery point (its replica becomes a protected VM) is
 *   admitted only while the tenant's other replicas with points on this site are fewer. The config
 *   check already refuses more protections than that in one config; this one counts what the site
 *   holds (a removed protection's replica that was kept counts until it is deleted).
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config, Protection, Tenant } from '../config/schema.js';
import { SequencerByKey } from '../replication/receiver/sequencer.js';
import { protectionsWithPoints } from '../state/points.js';
import type { StateStore } from '../state/store.js';
import { tenantReplicas, tenantUsage } from './usage.js';

const GiB = 1024 ** 3;

/** A tenant's quota would be passed: nothing was written. */
export class QuotaExceeded extends VmdrError {
  static storage(tenant: string, site: string, protection: string, used: { usedBytes: number; quotaBytes: number; cycleBytes: number; storageGiB: number }): QuotaExceeded {
    return new QuotaExceeded(
      `tenant "${tenant}" would pass its storage quota on site "${site}": its replicas use ${used.usedBytes} bytes of ${used.quotaBytes} (quota.storageGiB ${used.storageGiB}), and this cycle of protection "${protection}" brings ${used.cycleBytes}`,
      { tenant, site, protection, quota: 'storageGiB', usedBytes: used.usedBytes, quotaBytes: used.quotaBytes, cycleBytes: used.cycleBytes },
      `raise tenant "${tenant}"'s quota.storageGiB, or keep fewer recovery points of its protections (retention.keep); nothing was shipped into the replica, which stays at its newest point`,
    );
  }

  static vms(tenant: string, site: string, protection: string, protectedVms: string[], vms: number): QuotaExceeded {
    return new QuotaExceeded(
      `tenant "${tenant}" may have ${vms} protected VM${vms === 1 ? '' : 's'} (quota.vms) and site "${site}" holds replicas of ${protectedVms.length} (${protectedVms.join(', ')}): protection "${protection}" is refused`,
      { tenant, site, protection, quota: 'vms', vms, protectedVms: protectedVms.length },
      `raise tenant "${tenant}"'s quota.vms, or remove the replica of a protection the tenant no longer needs`,
    );
  }

  private constructor(message: string, subject: Record<string, string | number>, remedy: string) {
    super('QUOTA_EXCEEDED', message, { subject, remedy });
  }
}

export class TenantQuotas {
  /** By tenant: bytes announced by admitted cycles still being written. */
  private readonly admitted = new Map<string, number>();
  /** Admissions of one tenant one at a time: two cycles must not both fit into the same room. */
  private readonly turns = new SequencerByKey();

  constructor(
    private readonly site: string,
    private readonly storage: string,
    private readonly config: Pick<Config, 'protections' | 'tenants'>,
    private readonly state: StateStore,
  ) {}

  /**
   * Admits one cycle of `p` that brings at most `cycleBytes` (undefined: a sender that did not
   * say, checked against what is used alone); resolves with the release to call once the cycle
   * is committed or failed, or rejects with QuotaExceeded.
   */
  admitCycle(p: Protection, cycleBytes: number | undefined): Promise<() => void> {
    const tenant = this.tenantOf(p);
    if (!tenant?.quota) return Promise.resolve(() => undefined);
    return this.turns.run(tenant.name, async () => {
      if (!protectionsWithPoints(this.state.db).includes(p.name)) await this.checkNewVm(p, tenant);
      const { storageGiB } = tenant.quota!;
      const bytes = cycleBytes ?? 0;
      if (storageGiB !== undefined) {
        const quotaBytes = Math.floor(storageGiB * GiB);
        const usedBytes = ((await tenantUsage(this.storage, this.config)).get(tenant.name) ?? 0) + (this.admitted.get(tenant.name) ?? 0);
        if (usedBytes + bytes > quotaBytes || (cycleBytes === undefined && usedBytes >= quotaBytes)) {
          throw QuotaExceeded.storage(tenant.name, this.site, p.name, { usedBytes, quotaBytes, cycleBytes: bytes, storageGiB });
        }
      }
      this.admitted.set(tenant.name, (this.admitted.get(tenant.name) ?? 0) + bytes);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (this.admitted.get(tenant.name) ?? 0) - bytes;
        if (left > 0) this.admitted.set(tenant.name, left);
        else this.admitted.delete(tenant.name);
      };
    });
  }

  /** Refuses `p` becoming a protected VM of its tenant beyond quota.vms (a protection that has points already is one). */
  async admitVm(p: Protection): Promise<void> {
    const tenant = this.tenantOf(p);
    if (tenant?.quota?.vms === undefined || protectionsWithPoints(this.state.db).includes(p.name)) return;
    await this.checkNewVm(p, tenant);
  }

  private async checkNewVm(p: Protection, tenant: Tenant): Promise<void> {
    const vms = tenant.quota?.vms;
    if (vms === undefined) return;
    const withPoints = new Set(protectionsWithPoints(this.state.db));
    const others = (await tenantReplicas(this.storage, this.config))
      .filter((r) => r.tenant === tenant.name && r.protection !== p.name && withPoints.has(r.protection))
      .map((r) => r.protection);
    const protectedVms = [...new Set(others)].sort();
    if (protectedVms.length >= vms) throw QuotaExceeded.vms(tenant.name, this.site, p.name, protectedVms, vms);
  }

  private tenantOf(p: Protection): Tenant | undefined {
    return p.tenant === undefined ? undefined : this.config.tenants.find((t) => t.name === p.tenant);
  }
}
