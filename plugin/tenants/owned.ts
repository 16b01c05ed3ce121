/** What a tenant owns in the config: its protections, its plans, and the drills of either. */
import type { Config } from '../config/schema.js';

export interface Owned {
  protections: string[];
  plans: string[];
  drills: string[];
}

export function ownedBy(config: Config, tenant: string): Owned {
  const plans = config.plans.filter((p) => p.tenant === tenant).map((p) => p.name);
  return {
    protections: config.protections.filter((p) => p.tenant === tenant).map((p) => p.name),
    plans,
    // A drill runs a plan: one of the tenant's plans makes it the tenant's, whatever it says.
    drills: config.drills.filter((d) => d.tenant === tenant || plans.includes(d.plan)).map((d) => d.name),
  };
}

/** "2 protections (web, db), 1 plan (nightly)"; empty when it owns nothing of these kinds. */
export function describeOwned(owned: Partial<Owned>): string {
  const part = (names: string[] | undefined, kind: string) =>
    names?.length ? `${names.length} ${kind}${names.length > 1 ? 's' : ''} (${names.map((n) => `"${n}"`).join(', ')})` : undefined;
  const parts = [part(owned.protections, 'protection'), part(owned.plans, 'plan'), part(owned.drills, 'drill')].filter((p): p is string => p !== undefined);
  return parts.length <= 1 ? (parts[0] ?? '') : `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)}`;
}
