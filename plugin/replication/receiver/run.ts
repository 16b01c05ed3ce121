/**
 * Starts the endpoint of every site in the config that has one (or only `only`'s: `vmdr serve`
 * passes the config's localSite): its identity (made when missing), the replica store of a site that protections target,
 * recovered from whatever a crash left (uncommitted overlays go, interrupted merges finish) and
 * closed to other users, then the HTTPS endpoint. Retention runs after each commit.
 */
import type { FastifyInstance } from 'fastify';
import type { Progress } from '../../../hypervisors/types.js';
import type { Config } from '../../config/schema.js';
import { SiteStorageMissing } from '../../targets/errors.js';
import type { StateStore } from '../../state/store.js';
import { closeReplicas } from '../replica/access.js';
import { policyOf } from '../replica/retention.js';
import { ReplicaStore } from '../replica/store.js';
import { credentialsDir, endpointUrl, ensureIdentity, splitHostPort } from '../../sites/identity.js';
import { startReceiver } from './server.js';

export interface RunningReceiver {
  site: string;
  url: string;
  /** The address it listens on, with the port really bound (the config may say port 0). */
  listening: string;
  credentials: string;
  madeCredentials: boolean;
  /** SHA256:… of the site's certificate, the one its peers pin. */
  fingerprint: string;
  recovered: { discarded: string[]; mergesFinished: string[] };
  close(): Promise<void>;
}

export async function startReceivers(
  config: Config,
  file: string,
  state: StateStore,
  options: {
    only?: string;
    onWarning?: (err: unknown, context: { site: string; protection?: string; correlation?: string }) => void;
    /** The retention merges as they go. */
    onProgress?: (progress: Progress) => void;
  } = {},
): Promise<RunningReceiver[]> {
  const { only } = options;
  const running: RunningReceiver[] = [];
  try {
    for (const site of config.sites) {
      const endpoint = site.endpoint;
      if (!endpoint || (only && site.name !== only)) continue;
      const targeted = config.protections.some((p) => p.target.site === site.name);
      if (targeted && !site.storage) throw new SiteStorageMissing(site.name, file);
      const [host, port] = splitHostPort(endpoint.listen);
      const dir = credentialsDir(config, site);
      const urlHost = endpoint.url ? new URL(endpoint.url).hostname.replace(/^\[|\]$/g, '') : host;
      const credentials = await ensureIdentity(dir, site.name, [host, urlHost]);
      const replicas = targeted ? new ReplicaStore(site.storage!, state, { config }) : undefined;
      const recovered = replicas ? await replicas.recover() : { discarded: [], mergesFinished: [] };
      if (replicas) await closeReplicas(replicas.storage);
      let app: FastifyInstance | undefined;
      let bound: number;
      ({ app, port: bound } = await startReceiver(
        {
          config,
          site: site.name,
          ...(replicas ? { replicas } : {}),
          credentials,
          file,
          state,
          onWarning: (err, context) => options.onWarning?.(err, { site: site.name, ...context }),
          onCommitted: async (p) => {
            await replicas!.applyRetention(p.name, policyOf(p.retention), new Date(), {
              ...(options.onProgress ? { onProgress: options.onProgress } : {}),
            });
          },
        },
        { host, port },
      ));
      running.push({
        site: site.name,
        url: endpointUrl(port === 0 ? { ...endpoint, listen: `${host}:${bound}` } : endpoint),
        listening: `${host}:${bound}`,
        credentials: dir,
        madeCredentials: credentials.made,
        fingerprint: credentials.fingerprint,
        recovered,
        close: () => app!.close(),
      });
    }
  } catch (err) {
    await Promise.allSettled(running.map((r) => r.close()));
    throw err;
  }
  return running;
}
