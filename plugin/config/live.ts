/**
 * The config a running daemon reloads (SIGHUP, an edit of its file, a change made through its API)
 * without stopping: one object, updated in place, so every part that holds it (the receivers, the
 * API, the control socket, the replica stores) reads the new protections, tenants, plans, drills
 * and notifications at its next request, and nothing has to be told where the new one is.
 *
 * What a part did with the config when it started cannot change under it: the sites (their
 * listeners, URIs and certificates), the API's listener, the state file and which site this host
 * is. A reload that changes those keeps the values the daemon runs with and says a restart is
 * needed for them; a site's `bandwidth` alone is taken (cycles read it as they run).
 */
import { VmdrError } from '../../hypervisors/errors.js';
import { loadConfig, type LoadedConfig } from './load.js';
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
    if (key === 'sites' && bandwidthOnly(live.sites, next.sites)) {
      // A site link's bandwidth is read as cycles run (plugin/replication/bandwidth/gate.ts): taken in place.
      live.sites.forEach((s, i) => (s.bandwidth = next.sites[i]!.bandwidth));
      changed.push(key);
      continue;
    }
    if ((NEEDS_RESTART as readonly string[]).includes(key)) {
      restartNeeded.push(key);
      continue;
    }
    (live as Record<string, unknown>)[key] = next[key];
    changed.push(key);
  }
  return { changed, restartNeeded };
}

/** The sites differ in their `bandwidth` only. */
function bandwidthOnly(live: Config['sites'], next: Config['sites']): boolean {
  const rest = (sites: Config['sites']) => JSON.stringify(sites.map((s) => ({ ...s, bandwidth: undefined })));
  return live.length === next.length && rest(live) === rest(next);
}

/** What made the daemon read its config again. */
export type ReloadCause = 'signal' | 'file' | 'api';

export interface ReloadEvents<T> {
  /** Brings the daemon's parts in step with the config just taken; what it returns is told to `reloaded`. */
  apply(reloaded: Reloaded & { fingerprint: string }): Promise<T>;
  /** The file did not load: the daemon runs on with the config it had. */
  refused(cause: ReloadCause, err: VmdrError): void;
  reloaded(cause: ReloadCause, reloaded: Reloaded, applied: T): void;
}

/**
 * The daemon's reload, one at a time: the file read and checked again, taken in place when its text
 * changed (a text read before, by fingerprint, changes nothing), then `apply`. The returned promise
 * rejects with the config's own error when the file does not load: the API answers a change it
 * made with it.
 */
export function configReloader<T>(current: { file: string; config: Config; fingerprint: string }, events: ReloadEvents<T>): (cause: ReloadCause) => Promise<void> {
  let fingerprint = current.fingerprint;
  let queue: Promise<unknown> = Promise.resolve();
  const once = async (cause: ReloadCause): Promise<void> => {
    let next: LoadedConfig;
    try {
      next = await loadConfig(current.file);
    } catch (err) {
      if (err instanceof VmdrError) events.refused(cause, err);
      throw err;
    }
    if (next.fingerprint === fingerprint) return;
    fingerprint = next.fingerprint;
    const reloaded = reloadInPlace(current.config, next.config);
    events.reloaded(cause, reloaded, await events.apply({ ...reloaded, fingerprint }));
  };
  return (cause) => {
    const run = queue.then(() => once(cause), () => once(cause));
    queue = run.catch(() => undefined);
    return run;
  };
}
