/**
 * A daemon's HTTP API for tests, as `vmdr serve` starts it on a DR host, on libvirt's test driver: a config with
 * two tenants (acme, globex) and one protection each plus one of no tenant (the operators'), a real
 * SQLite state file, a real HTTPS listener on loopback with its self-signed certificate, and a token
 * of each kind. Every suite gets a fresh one in its own temporary directory.
 */
import { join } from 'node:path';
import { startApi, type ApiDeps, type ApiServer } from '../../plugin/api/server.js';
import type { SiteConnections } from '../../plugin/sites/connections.js';
import { ensureIdentity, type SiteIdentity } from '../../plugin/sites/identity.js';
import type { StateStore } from '../../plugin/state/store.js';
import { createToken } from '../../plugin/tenants/tokens.js';
import { closeTestConfig, openTestConfig, testProtections, twoTenants, writeTestConfig } from './test-config.js';

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
 * top-level YAML (plans, drills, notifications) after them; `dr`: more of the dr site's fields.
 */
export async function startTestApi(options: { moreProtections?: string; more?: string; drUri?: string; dr?: string } = {}): Promise<TestApi> {
  const { dir, file } = await writeTestConfig(
    'vmdr-api',
    `${twoTenants(', quota: { vms: 5 }')}protections:
${testProtections(['web-acme', 'acme'], ['db-globex', 'globex'], ['infra'])}${options.moreProtections ?? ''}${options.more ?? ''}`,
    { drUri: options.drUri, dr: options.dr },
  );
  const { config, state, sites } = await openTestConfig(file);
  const { api, credentials } = await startLoopbackApi(dir, { file, config, state, sites, log: false });
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
    close: () => closeTestConfig(dir, { api, sites, state }),
  };
}

/** The API on 127.0.0.1 (a free port) with its self-signed certificate in `dir`/api, as vmdr serve starts it. */
export async function startLoopbackApi(dir: string, deps: Omit<ApiDeps, 'credentials'>): Promise<{ api: ApiServer; credentials: SiteIdentity }> {
  const credentials = await ensureIdentity(join(dir, 'api'), 'api', ['127.0.0.1']);
  const api = await startApi({ ...deps, credentials }, { host: '127.0.0.1', port: 0 });
  return { api, credentials };
}
