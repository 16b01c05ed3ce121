/**
 * A DR receiver in the test process, as `vmdr serve` starts it: fresh credentials, a config with
 * the given protections on site `dr`, a real state file and replica store, fastify over HTTPS on a
 * loopback port, and the ReceiverClient a source host would use.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { parseConfig } from '../../plugin/config/load.js';
import { ensureIdentity, type SiteIdentity } from '../../plugin/sites/identity.js';
import { asThisSite } from '../../plugin/sites/peer-connect.js';
import { startReceiver } from '../../plugin/replication/receiver/server.js';
import { ReplicaStore } from '../../plugin/replication/replica/store.js';
import { ReceiverClient } from '../../plugin/replication/sender/receiver-client.js';
import { StateStore } from '../../plugin/state/store.js';
import { receiverConfigYaml, type ProtectionSpec } from './receiver-lab.js';

export interface TestReceiver {
  root: string;
  storage: string;
  state: StateStore;
  replicas: ReplicaStore;
  credentials: SiteIdentity;
  app: FastifyInstance;
  url: string;
  client: ReceiverClient;
  close(): Promise<void>;
}

export async function startTestReceiver(protections: ProtectionSpec[], prefix = 'test-vmdr-receiver-'): Promise<TestReceiver> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  const storage = join(root, 'replicas');
  const statePath = join(root, 'state', 'vmdr.db');
  const credentials = await ensureIdentity(join(root, 'receiver'), 'dr');
  // The config's port is never bound here: startReceiver is given port 0.
  const yaml = receiverConfigYaml({ statePath, storage, listen: '127.0.0.1:8443', credentials: credentials.dir, protections });
  const config = parseConfig(yaml, join(root, 'vmdr.yaml'));
  const state = StateStore.open(statePath);
  const replicas = new ReplicaStore(storage, state);
  const { app, port } = await startReceiver({ config, site: 'dr', replicas, credentials }, { host: '127.0.0.1', port: 0 });
  const url = `https://127.0.0.1:${port}`;
  const client = new ReceiverClient(url, 'dr', asThisSite(credentials));
  return {
    root,
    storage,
    state,
    replicas,
    credentials,
    app,
    url,
    client,
    async close() {
      client.close();
      await app.close();
      state.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}
