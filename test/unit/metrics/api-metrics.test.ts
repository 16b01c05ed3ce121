/**
 * GET /metrics on the daemon's API as `vmdr serve` mounts it: real HTTPS, real tokens in a real
 * state file. Operators read every protection's series; a tenant's token is answered as for a
 * route that does not exist (every tenant's protections are in the metrics); no token, 401.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { operatorOnly } from '../../../plugin/api/auth.js';
import { startApi, type ApiServer } from '../../../plugin/api/server.js';
import { loadConfig } from '../../../plugin/config/load.js';
import { VmdrMetrics } from '../../../plugin/metrics/registry.js';
import { metricsRoute } from '../../../plugin/metrics/route.js';
import { ReplicationLag } from '../../../plugin/replication/lag.js';
import { SiteConnections } from '../../../plugin/sites/connections.js';
import { ensureIdentity } from '../../../plugin/sites/identity.js';
import { StateStore } from '../../../plugin/state/store.js';
import { createToken } from '../../../plugin/tenants/tokens.js';
import { apiCall } from '../../helpers/api-client.js';
import { committedCycle, failedCycle } from '../../helpers/cycles.js';

describe('GET /metrics on the API (HTTPS, tokens)', function () {
  this.timeout(60_000);
  let dir: string;
  let state: StateStore;
  let sites: SiteConnections;
  let api: ApiServer;
  let ca: Buffer;
  const tokens: Record<string, string> = {};

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-api-metrics-'));
    const file = join(dir, 'vmdr.yaml');
    await writeFile(
      file,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: src, uri: "test:///default" }
  - { name: dr, uri: "test:///default", storage: ${join(dir, 'replicas')} }
tenants:
  - { name: acme }
protections:
  - name: web-acme
    tenant: acme
    source: { site: src, vm: test }
    target: { site: dr, vm: web-acme-dr, nics: [{ network: default }] }
`,
    );
    const { config } = await loadConfig(file);
    state = StateStore.open(config.state.path);
    sites = new SiteConnections(config, file);
    const lag = new ReplicationLag();
    const metrics = new VmdrMetrics({ protections: config.protections, lag, state });
    for (const c of [committedCycle('web-acme', Date.now() - 1_000, { bytesShipped: 123_456 }), failedCycle('web-acme', 'RECEIVER_UNREACHABLE')]) {
      lag.observe(c);
      metrics.cycle(c);
    }
    const credentials = await ensureIdentity(join(dir, 'api'), 'api', ['127.0.0.1']);
    ca = credentials.cert;
    api = await startApi(
      { file, config, state, sites, credentials, log: false, extraRoutes: (app) => metricsRoute(app, metrics.registry, { guard: operatorOnly }) },
      { host: '127.0.0.1', port: 0 },
    );
    tokens.operatorRead = createToken(state, { name: 'prometheus', role: 'read' }).token;
    tokens.acme = createToken(state, { name: 'acme-ops', tenant: 'acme', role: 'operate' }).token;
  });

  after(async () => {
    await api?.close();
    await sites?.close();
    state?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves an operator's read-only token the Prometheus text", async () => {
    const answer = await apiCall(api.url, ca, '/metrics', { token: tokens.operatorRead! });
    assert.equal(answer.status, 200);
    assert.match(String(answer.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(answer.text, /^vmdr_replication_shipped_bytes_total\{protection="web-acme",tenant="acme",site="src"\} 123456$/m);
    assert.match(answer.text, /^vmdr_replication_cycle_failures_total\{protection="web-acme",tenant="acme",site="src",code="RECEIVER_UNREACHABLE"\} 1$/m);
    assert.match(answer.text, /^vmdr_replication_lag_seconds\{protection="web-acme",tenant="acme",site="src"\} \d/m);
    assert.match(answer.text, /^process_resident_memory_bytes \d+$/m);
  });

  it("answers a tenant's token as for a route that does not exist, and no token with 401", async () => {
    const tenant = await apiCall(api.url, ca, '/metrics', { token: tokens.acme! });
    const nowhere = await apiCall(api.url, ca, '/no-such-route', { token: tokens.acme! });
    assert.equal(tenant.status, 404);
    assert.deepEqual(tenant.json, nowhere.json);
    assert.doesNotMatch(tenant.text, /vmdr_/);
    const none = await apiCall(api.url, ca, '/metrics');
    assert.equal(none.status, 401);
    assert.equal(none.json.error.code, 'TOKEN_MISSING');
  });

  it('is not in the OpenAPI document (it is not JSON)', async () => {
    const doc = await apiCall(api.url, ca, '/api/v1/openapi.json');
    assert.equal(doc.json.paths['/metrics'], undefined);
  });
});
