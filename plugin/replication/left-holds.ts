/**
 * A VM must never stay paused or frozen by vmdr. The adapter records each hold before it takes it
 * (Hold in hypervisors/types.ts); a holder killed inside its window (kill -9, OOM) leaves its
 * record, and whoever comes next releases the VM (ChangeTracker.releaseLeftHolds): every cycle
 * that begins afresh (before it pauses or freezes anything), and `vmdr serve` on a source host, at
 * its start and every HOLD_SWEEP_MS after, whoever the holder was (a `vmdr sync` or `sync --group`
 * of the command line forks nothing: the daemon's sweep covers it). So a VM runs again within a
 * few seconds of its holder's death where a daemon runs, and at the next vmdr start where none does.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { ChangeTracker, Hold, ReleasedHold } from '../../hypervisors/types.js';
import type { Config } from '../config/schema.js';
import { isLocalSite, type SiteConnections } from '../sites/connections.js';

export const HOLD_SWEEP_MS = 2_000;

export interface SiteRelease extends ReleasedHold {
  site: string;
}

export interface SiteHold extends Hold {
  site: string;
}

const heldAs = (h: Pick<Hold, 'kind'>) => (h.kind === 'pause' ? 'paused' : 'frozen');

function holderOf(h: Pick<Hold, 'holder' | 'left'>): string {
  const who = `vmdr process ${h.holder.pid} (started ${h.holder.startedAt})`;
  return h.left === 'deadline-passed' ? `${who}, which held it past its deadline` : `${who}, which is gone`;
}

/** The one line a release says; an ALERT where vmdr had left the VM held. */
export function describeRelease(r: ReleasedHold & { site?: string }): string {
  const vm = `VM ${JSON.stringify(r.vm)}${r.site ? ` (site ${r.site})` : ''}`;
  const held = `${(r.heldMs / 1000).toFixed(1)} s`;
  switch (r.action) {
    case 'resumed':
    case 'thawed':
      return `ALERT: ${vm} was left ${heldAs(r)} by ${holderOf(r)}: ${r.action} after ${held}`;
    case 'failed':
      return `ALERT: ${vm} may still be ${heldAs(r)} by ${holderOf(r)} (${held}), and could not be released: ${r.detail}`;
    default:
      return `${vm}: the ${r.kind} recorded by ${holderOf(r)} no longer held it (${r.detail}): record removed`;
  }
}

/**
 * The left holds of the cycle's host released before a cycle holds anything of its own, as the
 * cycle's warnings (a release that found nothing held says nothing). Never throws: the cycle's
 * own pause or freeze fails on a VM still held, and says so.
 */
export async function releaseHoldsBeforeCycle(tracker: ChangeTracker): Promise<string[]> {
  try {
    return (await tracker.releaseLeftHolds()).filter((r) => r.action !== 'none').map((r) => describeRelease(r));
  } catch (err) {
    return [`could not look for VMs a dead vmdr process left paused or frozen: ${(err as Error).message}`];
  }
}

/** The source sites of this host's protections (of `site` alone when given) whose hypervisor this host reaches. */
export function sourceSitesHere(config: Config, site?: string): string[] {
  const sources = new Set(config.protections.filter((p) => !site || p.source.site === site).map((p) => p.source.site));
  return [...sources].filter((s) => isLocalSite(config, s));
}

/** Releases the left holds of these sites' hosts (each opened through `sites`). */
export async function releaseHoldsOnSites(sites: SiteConnections, names: string[]): Promise<{ released: SiteRelease[]; failed: { site: string; error: unknown }[] }> {
  const released: SiteRelease[] = [];
  const failed: { site: string; error: unknown }[] = [];
  await Promise.all(
    names.map(async (site) => {
      try {
        const tracker = (await sites.adapter(site)).changeTracker;
        for (const r of (await tracker?.releaseLeftHolds()) ?? []) released.push({ site, ...r });
      } catch (error) {
        failed.push({ site, error });
      }
    }),
  );
  return { released, failed };
}

/**
 * The daemon's watchdog: releases the left holds of `sites()` now and every HOLD_SWEEP_MS until
 * `signal` aborts. Each release is told once; a failure (a release, a site) is told once until it
 * changes, then tried again at each sweep.
 */
export async function sweepLeftHolds(
  connections: SiteConnections,
  sites: () => string[],
  options: { signal: AbortSignal; onRelease: (r: SiteRelease) => void; onWarning: (site: string, err: unknown) => void; intervalMs?: number },
): Promise<void> {
  const told = new Map<string, string>();
  const once = (key: string, what: string, tell: () => void) => {
    if (told.get(key) === what) return;
    told.set(key, what);
    tell();
  };
  while (!options.signal.aborted) {
    const { released, failed } = await releaseHoldsOnSites(connections, sites());
    for (const r of released) {
      const key = `${r.site}/${r.vm}/${r.kind}/${r.holder.pid}`;
      if (r.action === 'failed') once(key, r.detail ?? '', () => options.onRelease(r));
      else {
        told.delete(key);
        options.onRelease(r);
      }
    }
    for (const f of failed) once(`site ${f.site}`, String((f.error as Error)?.message ?? f.error), () => options.onWarning(f.site, f.error));
    for (const key of told.keys()) if (key.startsWith('site ') && !failed.some((f) => `site ${f.site}` === key)) told.delete(key);
    await delay(options.intervalMs ?? HOLD_SWEEP_MS, undefined, { signal: options.signal }).catch(() => undefined);
  }
}

/**
 * The holds on these sites' hosts kept past their deadline: never seen while a daemon sweeps and
 * its releases work; where one is, a person must act (`vmdr status` says so).
 */
export async function overdueHolds(sites: SiteConnections, names: string[]): Promise<SiteHold[]> {
  const now = Date.now();
  const found = await Promise.all(
    names.map(async (site) => {
      const tracker = await sites.adapter(site).then((a) => a.changeTracker, () => undefined);
      const holds = (await tracker?.holds().catch(() => [])) ?? [];
      return holds.filter((h) => h.deadline.getTime() < now).map((h) => ({ site, ...h }));
    }),
  );
  return found.flat();
}

/** What status says of an overdue hold. */
export function describeOverdue(h: SiteHold): string {
  const over = ((Date.now() - h.deadline.getTime()) / 1000).toFixed(0);
  return `ALERT: VM ${JSON.stringify(h.vm)} (site ${h.site}) has been ${heldAs(h)} by vmdr since ${h.since.toISOString()}, ${over} s past its deadline; holder: vmdr process ${h.holder.pid}${h.left === 'holder-gone' ? ' (gone)' : ''}: \`vmdr serve\` or the next \`vmdr sync\` on this host releases it; should it stay, resume or thaw it by hand`;
}
