/**
 * Who fences a failed-over protection's source on this site, once per failover: the replication
 * loop (continuous.ts) and the source guard (source-guard.ts) both learn of a failover from the DR
 * site, and in `vmdr serve` they share one of these, so the fence goes up once, its event is said
 * once, and a failure to fence is said once per kind of failure (its code), not at every retry.
 * One fence at a time per protection: the second caller sees the first one's fence.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { resolveSource } from '../protections/source-identity.js';
import type { SiteConnections } from './connections.js';
import { fenceSource } from './fence.js';

export interface FenceReport {
  protection: string;
  /** Once per failover: the source VM was fenced (it was not fenced yet). */
  fenced?: { vm: string; failover: string | null; fencedAt: string; was: string };
  /** The source should be fenced and could not be; said again only when the failure's code changes. */
  fenceFailed?: { vm: string; failover: string | null; error: unknown; lifting?: true };
}

interface Standing {
  /** The failover the source was fenced for. */
  fencedFor?: string | null;
  /** The code of the last failure to fence. */
  problem?: string;
  busy: Promise<unknown>;
}

export class SourceFences {
  readonly #of = new Map<string, Standing>();

  constructor(private readonly sites: Pick<SiteConnections, 'adapter'>) {}

  /**
   * Fences `protection`'s source for `failover` unless it already was for that failover. Resolves
   * true once it is fenced. `recorded` reads the DR site's record of the source's identity: the VM
   * fenced is the one the points are of, never another machine that took its name since.
   */
  fence(
    protection: Protection,
    failover: string | null,
    recorded: () => Promise<{ uuid: string } | undefined>,
    report: (r: FenceReport) => void,
  ): Promise<boolean> {
    const s = this.standing(protection.name);
    const next = s.busy.then(async () => {
      if (s.fencedFor !== undefined && s.fencedFor === failover) return true;
      let vm = protection.source.vm;
      try {
        const source = await this.sites.adapter(protection.source.site);
        vm = (await resolveSource(source, protection.name, vm, await recorded())).vm;
        const done = await fenceSource(source, vm, { protection: protection.name, failover: failover ?? 'unknown' });
        s.fencedFor = failover;
        s.problem = undefined;
        if (!done.already) report({ protection: protection.name, fenced: { vm, failover, fencedAt: done.fencedAt, was: done.was } });
        return true;
      } catch (error) {
        const kind = error instanceof VmdrError ? error.code : 'INTERNAL';
        if (kind !== s.problem) report({ protection: protection.name, fenceFailed: { vm, failover, error } });
        s.problem = kind;
        return false;
      }
    });
    s.busy = next.catch(() => undefined);
    return next;
  }

  /** The protection replicates again: its next failover is fenced afresh. */
  forget(protection: string): void {
    this.#of.delete(protection);
  }

  private standing(name: string): Standing {
    let s = this.#of.get(name);
    if (!s) this.#of.set(name, (s = { busy: Promise.resolve() }));
    return s;
  }
}
