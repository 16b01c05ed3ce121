/**
 * The operator's override of the start guard (source-guard.ts): a start lease for one protection's
 * source VM on this host, for a while, without the DR site's answer. For when the DR site is lost
 * too, or unreachable at boot, and the operator has made sure the protection is not failed over.
 * Audited (`source.allow-start`, who). The daemon's guard takes the lease back as soon as the DR
 * site answers that the protection is failed over.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { recordAudit } from '../state/audit.js';
import type { StateStore } from '../state/store.js';
import type { SiteConnections } from './connections.js';
import { fenceOf } from './fence.js';

export const ALLOW_START_ACTION = 'source.allow-start';

export class StartGuardAbsent extends VmdrError {
  constructor(p: Protection, uri: string) {
    super('START_GUARD_ABSENT', `protection ${p.name}: its source site "${p.source.site}" (${uri}) has no start guard on this host: nothing to lift`, {
      subject: { protection: p.name, site: p.source.site, host: uri },
      remedy: `run this on the source host, where vmdr's qemu hook runs`,
    });
  }
}

/** A lease does not lift a fence: the protection is failed over, and its way back is a failback or a revert. */
export class SourceFenced extends VmdrError {
  constructor(p: Protection, vm: string, failover: string) {
    super('SOURCE_FENCED', `source VM ${vm} of protection ${p.name} is fenced: the protection was failed over (${failover})`, {
      subject: { protection: p.name, vm, failover },
      remedy: `\`vmdr failback ${p.name}\` brings it home (or \`vmdr failover ${p.name} --revert\` discards the DR side)`,
    });
  }
}

export async function allowStart(
  ctx: { sites: SiteConnections; state: StateStore },
  p: Protection,
  forMs: number,
  by: { actor: string; actorName: string },
): Promise<{ vm: string; until: Date }> {
  const leases = await ctx.sites.startLeases(p.source.site);
  if (!leases) throw new StartGuardAbsent(p, ctx.sites.site(p.source.site).uri);
  // Its domain name, which the hook knows it by (the config may name it by UUID); libvirtd may be down.
  const info = await ctx.sites
    .adapter(p.source.site)
    .then((a) => a.getVm(p.source.vm))
    .catch((err: unknown) => {
      // Not there to read: the hook still refuses a fenced VM whatever its lease.
      if (err instanceof VmdrError && (err.code === 'HYPERVISOR_UNREACHABLE' || err.code === 'VM_NOT_FOUND')) return undefined;
      throw err;
    });
  const fence = info && fenceOf(info);
  if (fence) throw new SourceFenced(p, info.name, fence.failover);
  const vm = info?.name ?? p.source.vm;
  const until = new Date(Date.now() + forMs);
  await leases.grant(vm, until);
  recordAudit(ctx.state, { ...by, action: ALLOW_START_ACTION, object: p.name, result: 'ok' });
  return { vm, until };
}
