/**
 * How the source guard (plugin/sites/source-guard.ts) reports in `vmdr serve`'s log: its fences as
 * the replication loop's (`source-fenced`, `fence-failed`), its other news as one event each.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../../plugin/config/schema.js';
import type { GuardReport } from '../../plugin/sites/source-guard.js';
import { reportCycle, type Say } from './cycles.js';

export function reportGuard(say: Say, p: Protection, r: GuardReport): void {
  if (r.fenced || r.fenceFailed) return reportCycle(say, p, r);
  if (r.failed) {
    const { what, site, error } = r.failed;
    const message = error instanceof Error ? error.message : String(error);
    const code = error instanceof VmdrError ? error.code : 'INTERNAL';
    return say(
      { event: 'source-guard-failed', protection: p.name, what, site, code, error: message },
      what === 'ask-dr'
        ? `${p.name}: ALERT: cannot ask DR site ${site} whether the protection is failed over, retrying: ${message}`
        : `${p.name}: ALERT: the start lease of source VM ${p.source.vm} is not renewed, retrying: ${message}`,
    );
  }
  if (r.guarded) {
    const g = r.guarded;
    return say(
      { event: 'start-guarded', protection: p.name, vm: g.vm, policy: g.policy, leaseSeconds: g.leaseMs / 1000 },
      `${p.name}: source VM ${g.vm} starts only with a start lease (watch policy ${g.policy}), renewed for ${g.leaseMs / 1000} s at each answer of DR site ${p.target.site}`,
    );
  }
  if (r.revoked) {
    const v = r.revoked;
    return say(
      { event: 'start-lease-revoked', protection: p.name, vm: v.vm, failover: v.failover },
      `${p.name}: took back the start lease of source VM ${v.vm}: the protection is failed over${v.failover ? ` (${v.failover})` : ''}`,
    );
  }
  if (r.started) {
    return say(
      { event: 'source-started', protection: p.name, vm: r.started.vm },
      `${p.name}: started source VM ${r.started.vm}: its autostart was held until DR site ${p.target.site} answered that the protection is not failed over`,
    );
  }
}
