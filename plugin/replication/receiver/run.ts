/**
 * Starts the receiver of every DR site in the config that has one: its credentials (made when
 * missing), its replica store recovered from whatever a crash left (uncommitted overlays go,
 * interrupted merges finish) and closed to other users, then the HTTPS endpoint. Retention runs after each commit.
 */
import type { FastifyInstance } from 'fastify';
import type { Progress } from '../../../hypervisors/types.js';
import type { Config } from '../../config/schema.js';
import { SiteStorageMissing } from '../../targets/errors.js';
import type { StateStore } from '../../state/store.js';
import { closeReplicas } from '../replica/access.js';
import { ReplicaStore } from '../replica/store.js';
import { credentialsDir, ensureReceiverCredentials, receiverUrl } from './credentials.js';
import { startReceiver } from './server.js';

export interface RunningReceiver {
  site: string;
  url: string;
  /** The address it listens on, with the port really bound (the config may say port 0). */
  listening: string;
  credentials: string;
  madeCredentials: boolean;
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
      if (!site.receiver || (only && site.name !== only)) continue;
      if (!site.storage) throw new SiteStorageMissing(site.name, file);
      const [host, port] = splitHostPort(site.receiver.listen);
      const dir = credentialsDir(config, site);
      const credentials = await ensureReceiverCredentials(dir, host);
      const replicas = new ReplicaStore(site.storage, state);
      const recovered = await replicas.recover();
      await closeReplicas(site.storage);
      let app: FastifyInstance | undefined;
      let bound: number;
      ({ app, port: bound } = await startReceiver(
        {
          config,
          site: site.name,
          replicas,
          credentials,
          onWarning: (err, context) => options.onWarning?.(err, { site: site.name, ...context }),
          onCommitted: async (p) => {
            await replicas.applyRetention(p.name, { keep: p.retention.keep, ...(p.retention.maxAge ? { maxAgeMs: p.retention.maxAge } : {}) }, new Date(), {
              ...(options.onProgress ? { onProgress: options.onProgress } : {}),
            });
          },
        },
        { host, port },
      ));
      running.push({
        site: site.name,
        url: receiverUrl(port === 0 ? { ...site.receiver, listen: `${host}:${bound}` } : site.receiver),
        listening: `${host}:${bound}`,
        credentials: dir,
        madeCredentials: credentials.made,
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

function splitHostPort(listen: string): [string, number] {
  const at = listen.lastIndexOf(':');
  return [listen.slice(0, at), Number(listen.slice(at + 1))];
}
