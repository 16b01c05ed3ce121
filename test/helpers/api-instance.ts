/**
 * A daemon's HTTP API for tests, as `vmdr serve` starts it on a DR host, on libvirt's test driver: a config with
 * two tenants (acme, globex) and one protection each plus one of no tenant (the operators'), a real
 * SQLite state file, a real HTTPS listener on loopback with its self-signed certificate, and a token
 * of each kind. Every suite gets a fresh one in its own temporary directory.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../plugin/config/load.js';
import { startApi, type ApiServer } from '../../plugin/api/server.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { ensureIdentity } from '../../plugin/sites/identity.js';
import { StateStore } from '../../plugin/state/store.js';
import { createToken } from '../../plugin/tenants/tokens.js';

export interface TestApi {
  dir: string;
  state: StateStore;
  sites: SiteConnections;
  api: ApiServer;
  /** The daemon's certificate: the one a client trusts. */
  ca: Buffer;
  tokens: { operator: string; operatorRead: string; acmeRead: string; acme: string; globex: string };
  close(): Promise<void>;
}

/**
 * `protections` YAML items added to the config's three (two spaces deep, as the list's own), and
 * top-level YAML (plans, drills, notifications) after them.
 */
export async function startTestApi(options: { moreProtections?: string; more?: string; drUri?: string } = {}): Promise<TestApi> {
  const dir = await mkdtemp(join(tmpdir(), 'vmdr-api-'));
  const file = join(dir, 'vmdr.yaml');
  // The DR site's storage is on this host, as on a DR host's daemon: its replicas' roles and points are read here.
  await mkdir(join(dir, 'replicas'), { mode: 0o700 });
  await writeFile(
    file,
    `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: src, uri: "test:///default" }
  - { name: dr, uri: "${options.drUri ?? 'test:///default'}", storage: ${join(dir, 'replicas')} }
tenants:
  - { name: acme, quota: { vms: 5 } }
  - { name: globex }
protections:
  - name: web-acme
    tenant: acme
    source: { site: src, vm: test }
    target: { site: dr, vm: web-acme-dr, nics: [{ network: default }] }
  - name: db-globex
    tenant: globex
    source: { site: src, vm: test }
    target: { site: dr, vm: db-globex-dr, nics: [{ network: default }] }
  - name: infra
    source: { site: src, vm: test }
    target: { site: dr, vm: infra-dr, nics: [{ network: default }] }
${options.moreProtections ?? ''}${options.more ?? ''}`,
  );
  const { config } = await loadConfig(file);
  const state = StateStore.open(config.state.path);
  const sites = new SiteConnections(config, file);
  const credentials = await ensureIdentity(join(dir, 'api'), 'api', ['127.0.0.1']);
  const api = await startApi({ file, config, state, sites, credentials, log: false }, { host: '127.0.0.1', port: 0 });
  const tokens = {
    operator: createToken(state, { name: 'ops', role: 'operate' }).token,
    operatorRead: createToken(state, { name: 'ops-ro', role: 'read' }).token,
    acmeRead: createToken(state, { name: 'acme-portal', tenant: 'acme', role: 'read' }).token,
    acme: createToken(state, { name: 'acme-ops', tenant: 'acme', role: 'operate' }).token,
    globex: createToken(state, { name: 'globex-ops', tenant: 'globex', role: 'operate' }).token,
  };
  return {
    dir,
    state,
    sites,
    api,
    ca: credentials.cert,
    tokens,
    close: async () => {
      await api.close();
      await sites.close();
      state.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
