/**
 * The daemon's HTTP API over real HTTPS and a real SQLite state file, on libvirt's test driver:
 * tokens and what each may see and do, the answers to bad input, the OpenAPI document, the audit,
 * and a sync started through the API followed to its end as server-sent events.
 */
import assert from 'node:assert/strict';
import type { ApiServer } from '../../../plugin/api/server.js';
import type { StateStore } from '../../../plugin/state/store.js';
import { createToken, revokeToken } from '../../../plugin/tenants/tokens.js';
import { apiCall, readEvents, type ApiCall } from '../../helpers/api-client.js';
import { startTestApi, type TestApi } from '../../helpers/api-instance.js';

describe('HTTP API (test:///default, HTTPS, SQLite)', function () {
  this.timeout(60_000);
  let instance: TestApi;
  let state: StateStore;
  let api: ApiServer;
  let ca: Buffer;
  let tokens: TestApi['tokens'];
  const call = (path: string, c: ApiCall = {}) => apiCall(api.url, ca, path, c);

  before(async () => {
    instance = await startTestApi();
    ({ state, api, ca, tokens } = instance);
  });

  after(async () => instance?.close());

  it('answers the health check and the OpenAPI document without a token', async () => {
    const health = await call('/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: 'ok' });
    const doc = await call('/api/v1/openapi.json');
    assert.equal(doc.status, 200);
    assert.match(doc.json.openapi, /^3\./);
    assert.ok(doc.json.paths['/api/v1/protections/{name}/sync'].post, 'the sync route is described');
    assert.deepEqual(doc.json.paths['/api/v1/protections/{name}/sync'].post.requestBody.content['application/json'].schema.properties.compression.enum, ['auto', 'off']);
  });

  it('refuses a missing or malformed token with 401 and its code', async () => {
    const none = await call('/api/v1/protections');
    assert.equal(none.status, 401);
    assert.equal(none.json.error.code, 'TOKEN_MISSING');
    const bad = await call('/api/v1/protections', { token: 'vmdr_nope_nope' });
    assert.equal(bad.status, 401);
    assert.equal(bad.json.error.code, 'TOKEN_INVALID');
  });

  it("shows a tenant's token its own protections and tenant only; another tenant's answers as a name that does not exist", async () => {
    const mine = await call('/api/v1/protections', { token: tokens.acmeRead });
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.json.map((p: { name: string }) => p.name), ['web-acme']);
    const all = await call('/api/v1/protections', { token: tokens.operatorRead });
    assert.deepEqual(all.json.map((p: { name: string }) => p.name), ['web-acme', 'db-globex', 'infra']);

    const theirs = await call('/api/v1/protections/db-globex', { token: tokens.acmeRead });
    const nobodys = await call('/api/v1/protections/no-such', { token: tokens.acmeRead });
    assert.equal(theirs.status, 404);
    assert.equal(nobodys.status, 404);
    assert.deepEqual(theirs.json, JSON.parse(nobodys.text.replaceAll('no-such', 'db-globex')), 'the same answer, but for the name asked');
    assert.equal((await call('/api/v1/protections/infra', { token: tokens.acmeRead })).status, 404, 'an object of no tenant is the operators\'');
    assert.equal((await call('/api/v1/protections/db-globex/points', { token: tokens.acmeRead })).status, 404);

    const tenants = await call('/api/v1/tenants', { token: tokens.acmeRead });
    assert.deepEqual(tenants.json.map((t: { name: string }) => t.name), ['acme']);
    assert.deepEqual(tenants.json[0].protections, ['web-acme']);
    assert.equal((await call('/api/v1/tenants/globex', { token: tokens.acmeRead })).json.error.code, 'TENANT_UNKNOWN');
  });

  it("tells a token its own name, role and tenant (null: an operator's), and nothing of its secret", async () => {
    const tenant = await call('/api/v1/whoami', { token: tokens.acmeRead });
    assert.equal(tenant.status, 200);
    assert.deepEqual(tenant.json, { token: 'acme-portal', role: 'read', tenant: 'acme' });
    assert.deepEqual((await call('/api/v1/whoami', { token: tokens.operator })).json, { token: 'ops', role: 'operate', tenant: null });
    assert.equal((await call('/api/v1/whoami')).json.error.code, 'TOKEN_MISSING');
  });

  it('refuses a read-only token on a mutating route, and says so in the audit', async () => {
    const r = await call('/api/v1/protections/web-acme/sync', { method: 'POST', token: tokens.acmeRead, body: {} });
    assert.equal(r.status, 403);
    assert.equal(r.json.error.code, 'TOKEN_READ_ONLY');
    const audit = await call('/api/v1/audit?tenant=acme', { token: tokens.operatorRead });
    assert.equal(audit.status, 200);
    const record = audit.json.find((a: { action: string; result: string }) => a.action === 'protection.sync' && a.result === 'refused');
    assert.ok(record, JSON.stringify(audit.json));
    assert.equal(record.code, 'TOKEN_READ_ONLY');
    assert.equal(record.object, 'web-acme');
    assert.equal((await call('/api/v1/audit', { token: tokens.acme })).status, 404, "the audit is the operators'");
  });

  it('names the field of a body that fails its schema, and refuses a body over the limit', async () => {
    const wrong = await call('/api/v1/protections/web-acme/sync', { method: 'POST', token: tokens.acme, body: { full: 'yes' } });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.json.error.code, 'BAD_REQUEST');
    assert.match(wrong.json.error.message, /^body\.full: /);
    const extra = await call('/api/v1/protections/web-acme/sync', { method: 'POST', token: tokens.acme, body: { fast: true } });
    assert.equal(extra.status, 400);
    assert.match(extra.json.error.message, /fast/);
    const huge = await call('/api/v1/protections/web-acme/sync', { method: 'POST', token: tokens.acme, body: { pad: 'x'.repeat(70 * 1024) } });
    assert.equal(huge.status, 413);
    assert.equal(huge.json.error.code, 'BODY_TOO_LARGE');
  });

  it('starts a sync with 202 and an operation that can be polled and followed to its end', async () => {
    const started = await call('/api/v1/protections/web-acme/sync', { method: 'POST', token: tokens.acme, body: {} });
    assert.equal(started.status, 202, started.text);
    const op = started.json;
    assert.match(op.id, /^op-/);
    assert.equal(op.links.events, `/api/v1/operations/${op.id}/events`);
    const events = await readEvents(api.url, ca, op.links.events, tokens.acmeRead);
    const last = events.at(-1)!;
    // The test driver has no backup jobs: the sync fails, and says why with its code.
    assert.equal(last[0], 'failed', JSON.stringify(events));
    assert.equal(typeof last[1].error.code, 'string');
    const polled = await call(op.links.self, { token: tokens.acmeRead });
    assert.equal(polled.json.state, 'failed');
    assert.deepEqual(polled.json.error, last[1].error);
    assert.equal((await call(op.links.self, { token: tokens.globex })).status, 404, "another tenant's token does not see it");
  });

  it('refuses a revoked token on its next request', async () => {
    const { token, record } = createToken(state, { name: 'short-lived', tenant: 'acme', role: 'read' });
    assert.equal((await call('/api/v1/protections', { token })).status, 200);
    revokeToken(state, record.id);
    const r = await call('/api/v1/protections', { token });
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, 'TOKEN_REVOKED');
  });

  it('echoes a sane request id and makes one otherwise', async () => {
    const given = await call('/healthz', { headers: { 'x-request-id': 'portal-42' } });
    assert.equal(given.headers['x-request-id'], 'portal-42');
    const made = await call('/healthz', { headers: { 'x-request-id': 'bad id\twith tab' } });
    assert.match(String(made.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });
});
