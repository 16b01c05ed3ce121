/**
 * How a release of a VM a dead vmdr process left paused or frozen (plugin/replication/left-holds.ts)
 * is told in `vmdr serve`'s log: one `hold-released` event naming the VM, the kind of hold, the
 * holder and how long it held the VM (an ALERT line where the VM was still held), or one
 * `hold-release-failed` alert while it cannot be released.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import { describeRelease, type SiteRelease } from '../../plugin/replication/left-holds.js';
import type { Say } from './cycles.js';

export function reportRelease(say: Say, r: SiteRelease): void {
  const event = {
    event: r.action === 'failed' ? 'hold-release-failed' : 'hold-released',
    site: r.site,
    vm: r.vm,
    kind: r.kind,
    holder: r.holder,
    left: r.left,
    action: r.action,
    ...(r.detail ? { detail: r.detail } : {}),
    heldMs: r.heldMs,
    since: r.since.toISOString(),
    deadline: r.deadline.toISOString(),
  };
  say(event, describeRelease(r));
}

export function reportSweepFailure(say: Say, site: string, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  say(
    { event: 'warning', site, ...(err instanceof VmdrError ? err.toJSON() : { message }) },
    `warning: site ${site}: could not look for VMs a dead vmdr process left paused or frozen, retrying: ${message}`,
  );
}
