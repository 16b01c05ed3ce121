/**
 * Which protections a daemon watches, and with which watch: a protection's own, or that of the
 * plan it belongs to (the config allows only one). The DR site watches: the daemon of a
 * protection's target site (every protection when it serves every site).
 */
import type { Config, Protection, Watch } from '../config/schema.js';

export interface Watched {
  protection: Protection;
  watch: Watch;
  /** The plan whose watch this is (absent: the protection's own). */
  plan?: string;
}

export function watchOf(config: Config, p: Protection): Watched | undefined {
  if (p.watch) return { protection: p, watch: p.watch };
  const plan = config.plans.find((x) => x.watch && x.groups.some((g) => g.vms.includes(p.name)));
  return plan?.watch ? { protection: p, watch: plan.watch, plan: plan.name } : undefined;
}

/** The protections the daemon of `site` watches (every watched one when undefined). */
export function watchedOnSite(config: Config, site: string | undefined): Watched[] {
  return config.protections
    .filter((p) => site === undefined || p.target.site === site)
    .flatMap((p) => {
      const w = watchOf(config, p);
      return w ? [w] : [];
    });
}
