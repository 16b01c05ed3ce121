/**
 * GET /metrics on the daemon's API as `vmdr serve` mounts it: real HTTPS, real tokens in a real
 * state file. Operators read every protection's series; a tenant's token reads its own tenant's
 * series only (no other tenant's, no process series); no token, 401.
 */
import assert from 'node:assert/strict';
import type { ApiServer } from '../../../plugin/api/server.js';
import { VmdrMetrics } from '../../../plugin/metrics/registry.js';
import { daemonMetricsRoute } from '../../../plugin/metrics/route.js';
import { ReplicationLag } from '../../../plugin/replication/lag.js';
import type { SiteConnections } from '../../../plugin/sites/connections.js';
import type { SiteIdentity } from '../../../plugin/sites/identity.js';
import type { StateStore } from '../../../plugin/state/store.js';
import { createToken } from '../../../plugin/tenants/tokens.js';
import { apiCall } from '../../helpers/api-client.js';
import { startLoopbackApi } from '../../helpers/api-instance.js';
import { committedCycle, failedCycle } from '../../helpers/cycles.js';
import { closeTestConfig, openTestConfig, testProtections, writeTestConfig } from '../../helpers/test-config.js';

describe('GET /metrics on the API (HTTPS, tokens)', function () {
  this.timeout(60_000);
  let dir: string;
  let state: StateStore;
  let sites: SiteConnections;
  let api: ApiServer;
  let ca: Buffer;
  const tokens: Record<string, string> = {};

  before(async () => {
    let file: string;
    ({ dir, file } = await writeTestConfig('test-vmdr-api-metrics', `tenants:\n  - { name: acme }\n  - { name: globex }\nprotections:\n${testProtections(['web-acme', 'acme'], ['db-globex', 'globex'])}`));
    const { config, ...opened } = await openTestConfig(file);
    ({ state, sites } = opened);
    const lag = new ReplicationLag();
    const metrics = new VmdrMetrics({ protections: config.protections, lag, state });
    for (const c of [
      committedCycle('web-acme', Date.now() - 1_000, { bytesShipped: 123_456 }),
      failedCycle('web-acme', 'RECEIVER_UNREACHABLE'),
      committedCycle('db-globex', Date.now() - 2_000, { bytesShipped: 654_321 }),
    ]) {
      lag.observe(c);
      metrics.cycle(c);
    }
    let credentials: SiteIdentity;
    ({ api, credentials } = await startLoopbackApi(dir, { file, config, state, sites, log: false, extraRoutes: (app) => daemonMetricsRoute(app, metrics.registry) }));
    ca = credentials.cert;
    tokens.operatorRead = createToken(state, { name: 'prometheus', role: 'read' }).token;
    tokens.acme = createToken(state, { name: 'acme-ops', tenant: 'acme', role: 'operate' }).token;
  });

  after(() => closeTestConfig(dir, { api, sites, state }));

  it("serves an operator's read-only token the Prometheus text", async () => {
    const answer = await apiCall(api.url, ca, '/metrics', { token: tokens.operatorRead! });
    assert.equal(answer.status, 200);
    assert.match(String(answer.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(answer.text, /^vmdr_replication_shipped_bytes_total\{protection="web-acme",tenant="acme",site="src"\} 123456$/m);
    assert.match(answer.text, /^vmdr_replication_cycle_failures_total\{protection="web-acme",tenant="acme",site="src",code="RECEIVER_UNREACHABLE"\} 1$/m);
    assert.match(answer.text, /^vmdr_replication_lag_seconds\{protection="web-acme",tenant="acme",site="src"\} \d/m);
    assert.match(answer.text, /^process_resident_memory_bytes \d+$/m);
  });

  it("serves a tenant's token its own tenant's series only, and no token 401", async () => {
    const operator = await apiCall(api.url, ca, '/metrics', { token: tokens.operatorRead! });
    assert.match(operator.text, /protection="db-globex",tenant="globex"/, "an operator sees globex's too");
    const tenant = await apiCall(api.url, ca, '/metrics', { token: tokens.acme! });
    assert.equal(tenant.status, 200, tenant.text);
    assert.match(tenant.text, /^vmdr_replication_shipped_bytes_total\{protection="web-acme",tenant="acme",site="src"\} 123456$/m);
    assert.match(tenant.text, /^# TYPE vmdr_replication_shipped_bytes_total counter$/m);
    assert.match(tenant.text, /^vmdr_replication_cycle_failures_total\{protection="web-acme",tenant="acme",site="src",code="RECEIVER_UNREACHABLE"\} 1$/m);
    assert.doesNotMatch(tenant.text, /globex/, "nothing of another tenant");
    assert.doesNotMatch(tenant.text, /^process_|^nodejs_/m, 'nothing of the process');
    for (const line of tenant.text.split('\n').filter((l) => l && !l.startsWith('#'))) assert.match(line, /[{,]tenant="acme"[,}]/, line);
    const none = await apiCall(api.url, ca, '/metrics');
    assert.equal(none.status, 401);
    assert.equal(none.json.error.code, 'TOKEN_MISSING');
  });

  it('is not in the OpenAPI document (it is not JSON)', async () => {
    const doc = await apiCall(api.url, ca, '/api/v1/openapi.json');
    assert.equal(doc.json.paths['/metrics'], undefined);
  });
});
