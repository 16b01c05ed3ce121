/**
 * The config a running daemon reloads (SIGHUP, an edit of its file, a change made through its API)
 * without stopping: one object, updated in place, so every part that holds it (the receivers, the
 * API, the control socket, the replica stores) reads the new protections, tenants, plans, drills
 * and notifications at its next request, and nothing has to be told where the new one is.
 *
 * What a part did with the config when it started cannot change under it: the sites (their
 * listeners, URIs and certificates), the API's listener, the state file and which site this host
 * is. A reload that changes those keeps the values the daemon runs with and says a restart is
 * needed for them.
 */
import type { Config } from './schema.js';

const NEEDS_RESTART = ['version', 'state', 'localSite', 'api', 'sites'] as const satisfies readonly (keyof Config)[];

export interface Reloaded {
  /** The top-level keys whose values changed and were taken. */
  changed: (keyof Config)[];
  /** The top-level keys that changed but keep their running values until the daemon restarts. */
  restartNeeded: (keyof Config)[];
}

export function reloadInPlace(live: Config, next: Config): Reloaded {
  const changed: (keyof Config)[] = [];
  const restartNeeded: (keyof Config)[] = [];
  const keys = new Set([...Object.keys(live), ...Object.keys(next)] as (keyof Config)[]);
  for (const key of keys) {
    if (JSON.stringify(live[key]) === JSON.stringify(next[key])) continue;
    if ((NEEDS_RESTART as readonly string[]).includes(key)) {
      restartNeeded.push(key);
      continue;
    }
    (live as Record<string, unknown>)[key] = next[key];
    changed.push(key);
  }
  return { changed, restartNeeded };
}
