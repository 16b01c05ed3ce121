/**
 * The daemon's HTTP API over real HTTPS and a real SQLite state file, on libvirt's test driver:
 * tokens and what each may see and do, the answers to bad input, the OpenAPI document, the audit,
 * and a sync started through the API followed to its end as server-sent events.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ApiServer } from '../../../plugin/api/server.js';
import type { SiteConnections } from '../../../plugin/sites/connections.js';
import type { StateStore } from '../../../plugin/state/store.js';
import { createToken, revokeToken } from '../../../plugin/tenants/tokens.js';
import { apiCall, readEvents, type ApiCall } from '../../helpers/api-client.js';
import { startTestApi, type TestApi } from '../../helpers/api-instance.js';

describe('HTTP API (test:///default, HTTPS, SQLite)', function () {
  this.timeout(60_000);
  let t: TestApi;
  let dir: string;
  let state: StateStore;
  let sites: SiteConnections;
  let api: ApiServer;
  let ca: Buffer;
  let tokens: TestApi['tokens'];
  const call = (path: string, c: ApiCall = {}) => apiCall(api.url, ca, path, c);

  before(async () => {
    t = await startTestApi();
    ({ dir, state, sites, api, ca, tokens } = t);
  });

  after(() => t?.close());

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
    const events = await readEvents(api.url, ca, op.links.events, tokens.acmeRead!);
    const last = events.at(-1)!;
    // The test driver has no backup jobs: the sync fails, and says why with its code.
    assert.equal(last[0], 'failed', JSON.stringify(events));
    assert.equal(typeof last[1].error.code, 'string');
    const polled = await call(op.links.self, { token: tokens.acmeRead });
    assert.equal(polled.json.state, 'failed');
    assert.deepEqual(polled.json.error, last[1].error);
    assert.equal((await call(op.links.self, { token: tokens.globex })).status, 404, "another tenant's token does not see it");
  });

  it('refuses an expired token with 401 TOKEN_EXPIRED', async () => {
    const hourAgo = new Date(Date.now() - 3_600_000);
    const { token } = createToken(state, { name: 'expired', tenant: 'acme', role: 'read', expiresAt: new Date(hourAgo.getTime() + 60_000) }, hourAgo);
    const r = await call('/api/v1/protections', { token });
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, 'TOKEN_EXPIRED');
  });

  it('refuses a revoked token on its next request', async () => {
    const { token, record } = createToken(state, { name: 'short-lived', tenant: 'acme', role: 'read' });
    assert.equal((await call('/api/v1/protections', { token })).status, 200);
    revokeToken(state, record.id);
    const r = await call('/api/v1/protections', { token });
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, 'TOKEN_REVOKED');
  });

  it("manages tokens: a tenant's token makes and revokes its own tenant's only, and a secret is shown once", async () => {
    const made = await call('/api/v1/tokens', { method: 'POST', token: tokens.acme, body: { name: 'acme-ci', expires: '30d' } });
    assert.equal(made.status, 201, made.text);
    assert.equal(made.json.tenant, 'acme', "a tenant's token makes tokens of its own tenant");
    assert.equal(made.json.role, 'read');
    assert.match(made.json.token, /^vmdr_[0-9a-f]+_/);
    const mine = await call('/api/v1/protections', { token: made.json.token });
    assert.deepEqual(mine.json.map((p: { name: string }) => p.name), ['web-acme']);

    const listed = await call('/api/v1/tokens', { token: tokens.acmeRead });
    assert.ok(listed.json.every((t: { tenant: string }) => t.tenant === 'acme'), listed.text);
    assert.ok(listed.json.some((t: { id: string }) => t.id === made.json.id));
    // The secret is all after the id: it may hold "_" itself (base64url).
    const secret = (made.json.token as string).split('_').slice(2).join('_');
    assert.ok(!listed.text.includes(secret), 'no secret in a list');

    const theirs = await call('/api/v1/tokens', { method: 'POST', token: tokens.acme, body: { name: 'x', tenant: 'globex' } });
    const nobodys = await call('/api/v1/tokens', { method: 'POST', token: tokens.acme, body: { name: 'x', tenant: 'nope' } });
    assert.equal(theirs.status, 404);
    assert.deepEqual(theirs.json, JSON.parse(nobodys.text.replaceAll('nope', 'globex')));
    const globexToken = (await call('/api/v1/tokens', { token: tokens.operatorRead })).json.find((t: { tenant: string }) => t.tenant === 'globex').id;
    const revokeTheirs = await call(`/api/v1/tokens/${globexToken}`, { method: 'DELETE', token: tokens.acme });
    const revokeNone = await call('/api/v1/tokens/0123456789ab', { method: 'DELETE', token: tokens.acme });
    assert.equal(revokeTheirs.status, 404);
    assert.deepEqual(revokeTheirs.json, JSON.parse(revokeNone.text.replaceAll('0123456789ab', globexToken)));
    assert.equal((await call('/api/v1/protections', { token: tokens.globex })).status, 200, 'still valid');

    const revoked = await call(`/api/v1/tokens/${made.json.id}`, { method: 'DELETE', token: tokens.acme });
    assert.equal(revoked.status, 200);
    assert.equal(revoked.json.state, 'revoked');
    assert.equal((await call('/api/v1/protections', { token: made.json.token })).json.error.code, 'TOKEN_REVOKED');
    const audit = (await call('/api/v1/audit?tenant=acme', { token: tokens.operatorRead })).json as { action: string; object: string; result: string }[];
    assert.ok(audit.some((a) => a.action === 'token.create' && a.object === made.json.id && a.result === 'ok'));
    assert.ok(audit.some((a) => a.action === 'token.revoke' && a.object === made.json.id && a.result === 'ok'));
  });

  it('refuses names with path separators, ".." or control characters at the edge, naming the parameter', async () => {
    for (const name of ['..%2F..%2Fetc%2Fpasswd', 'a..b', 'a%00b', 'a%5Cb', 'x%0Ay']) {
      const r = await call(`/api/v1/protections/${name}`, { token: tokens.operatorRead });
      assert.equal(r.status, 400, `${name}: ${r.text}`);
      assert.match(r.json.error.message, /^params\.name: /, name);
    }
  });

  it("starts failovers only of the caller's own protections, with a body that makes sense", async () => {
    const readOnly = await call('/api/v1/failovers', { method: 'POST', token: tokens.acmeRead, body: { protection: 'web-acme', kind: 'test' } });
    assert.equal(readOnly.status, 403);
    const theirs = await call('/api/v1/failovers', { method: 'POST', token: tokens.acme, body: { protection: 'db-globex', kind: 'test' } });
    assert.equal(theirs.status, 404);
    assert.equal(theirs.json.error.code, 'PROTECTION_UNKNOWN');
    const both = await call('/api/v1/failovers', { method: 'POST', token: tokens.acme, body: { protection: 'web-acme', plan: 'p' } });
    assert.equal(both.status, 400);
    assert.match(both.json.error.message, /^body\.protection: name a protection or a plan/);
    const when = await call('/api/v1/failovers', { method: 'POST', token: tokens.acme, body: { protection: 'web-acme', point: 'rp-1', at: '2026-12-01T00:00:00Z' } });
    assert.equal(when.status, 400);
    assert.match(when.json.error.message, /^body\.at: point and at exclude each other/);
    const started = await call('/api/v1/failovers', { method: 'POST', token: tokens.acme, body: { protection: 'web-acme', kind: 'test' } });
    assert.equal(started.status, 202, started.text);
    const events = await readEvents(api.url, ca, started.json.links.events, tokens.acme!);
    // No recovery point on the test driver: the drill is refused before it changes anything, and says why.
    assert.equal(events.at(-1)![0], 'failed');
    assert.equal(typeof events.at(-1)![1].error.code, 'string');
  });

  it('makes and removes tenants for operators: networks, the config file, and what the API shows next', async () => {
    const asTenant = await call('/api/v1/tenants', { method: 'POST', token: tokens.acme, body: { name: 'initech' } });
    assert.equal(asTenant.status, 404, "a tenant's token does not even see the route");
    const made = await call('/api/v1/tenants', { method: 'POST', token: tokens.operator, body: { name: 'initech', vmQuota: 3, networks: ['lan'] } });
    assert.equal(made.status, 201, made.text);
    assert.deepEqual(made.json.quota, { storageGiB: null, vms: 3 });
    const network = made.json.networks[0] as string;
    assert.match(network, /initech/);
    assert.match(await readFile(join(dir, 'vmdr.yaml'), 'utf8'), /name: initech/);
    const dr = await sites.adapter('dr');
    assert.ok((await dr.listNetworks()).some((n) => n.name === network && n.isolated), 'its isolated network exists');
    assert.ok((await call('/api/v1/tenants', { token: tokens.operatorRead })).json.some((t: { name: string }) => t.name === 'initech'));
    const again = await call('/api/v1/tenants', { method: 'POST', token: tokens.operator, body: { name: 'initech' } });
    assert.equal(again.status, 409);
    assert.equal(again.json.error.code, 'TENANT_EXISTS');
    const bad = await call('/api/v1/tenants', { method: 'POST', token: tokens.operator, body: { name: '../x' } });
    assert.equal(bad.status, 400);

    const owning = await call('/api/v1/tenants/acme', { method: 'DELETE', token: tokens.operator });
    assert.equal(owning.status, 409);
    assert.equal(owning.json.error.code, 'TENANT_IN_USE');
    const removed = await call('/api/v1/tenants/initech', { method: 'DELETE', token: tokens.operator });
    assert.equal(removed.status, 200, removed.text);
    assert.ok(!(await dr.listNetworks()).some((n) => n.name === network), 'its network is gone');
    assert.equal((await call('/api/v1/tenants/initech', { token: tokens.operatorRead })).status, 404);
  });

  it('adds and removes protections for operators: the config file, quota and references checked, the replica kept', async () => {
    const entry = { name: 'mail-acme', tenant: 'acme', source: { site: 'src', vm: 'test' }, target: { site: 'dr', vm: 'mail-acme-dr', nics: [{ network: 'default' }] }, rpo: '5m' };
    const asTenant = await call('/api/v1/protections', { method: 'POST', token: tokens.acme, body: entry });
    assert.equal(asTenant.status, 404, "a tenant's token does not even see the route");
    const readOnly = await call('/api/v1/protections', { method: 'POST', token: tokens.operatorRead, body: entry });
    assert.equal(readOnly.status, 403);
    const made = await call('/api/v1/protections', { method: 'POST', token: tokens.operator, body: entry });
    assert.equal(made.status, 201, made.text);
    assert.equal(made.json.rpoSeconds, 300);
    assert.equal(made.json.tenant, 'acme');
    assert.match(await readFile(join(dir, 'vmdr.yaml'), 'utf8'), /name: mail-acme/);
    assert.equal((await call('/api/v1/protections/mail-acme', { token: tokens.acmeRead })).status, 200, "its tenant sees it at once");
    assert.equal((await call('/api/v1/protections/mail-acme', { token: tokens.globex })).status, 404);

    const again = await call('/api/v1/protections', { method: 'POST', token: tokens.operator, body: entry });
    assert.equal(again.status, 409);
    assert.equal(again.json.error.code, 'PROTECTION_EXISTS');
    const badSite = await call('/api/v1/protections', { method: 'POST', token: tokens.operator, body: { ...entry, name: 'x1', target: { ...entry.target, site: 'nowhere', vm: 'x1-dr' } } });
    assert.equal(badSite.status, 400);
    assert.equal(badSite.json.error.code, 'CONFIG_INVALID');
    assert.match(badSite.json.error.message, /protections\[\d+\]\.target\.site: unknown site "nowhere"/, badSite.json.error.message);
    const badRpo = await call('/api/v1/protections', { method: 'POST', token: tokens.operator, body: { ...entry, name: 'x2', rpo: 'soon' } });
    assert.equal(badRpo.status, 400);
    assert.match(badRpo.json.error.message, /rpo/);
    const badName = await call('/api/v1/protections', { method: 'POST', token: tokens.operator, body: { ...entry, name: '../x' } });
    assert.equal(badName.status, 400);
    assert.match(badName.json.error.message, /name/);
    const before = await readFile(join(dir, 'vmdr.yaml'), 'utf8');
    assert.ok(!before.includes('x1') && !before.includes('x2'), 'a refused entry leaves the file as it was');

    const removed = await call('/api/v1/protections/mail-acme', { method: 'DELETE', token: tokens.acme });
    assert.equal(removed.status, 200, removed.text);
    assert.deepEqual(removed.json, { protection: 'mail-acme', kept: { site: 'dr', targetVm: 'mail-acme-dr' } });
    assert.doesNotMatch(await readFile(join(dir, 'vmdr.yaml'), 'utf8'), /mail-acme/);
    assert.equal((await call('/api/v1/protections/mail-acme', { token: tokens.operatorRead })).status, 404);
    assert.equal((await call('/api/v1/protections/db-globex', { method: 'DELETE', token: tokens.acme })).status, 404, "another tenant's is a name that does not exist");
    const audit = (await call('/api/v1/audit', { token: tokens.operatorRead })).json as { action: string; object: string | null; result: string }[];
    assert.ok(audit.some((a) => a.action === 'protection.add' && a.result === 'ok'), JSON.stringify(audit.slice(0, 3)));
    assert.ok(audit.some((a) => a.action === 'protection.remove'));
  });

  it('pauses and resumes a protection: no sync while paused, status says who paused it', async () => {
    const paused = await call('/api/v1/protections/web-acme/pause', { method: 'POST', token: tokens.acme, body: { reason: 'maintenance' } });
    assert.equal(paused.status, 200, paused.text);
    assert.equal(paused.json.paused.by, 'acme-ops');
    assert.equal(paused.json.paused.reason, 'maintenance');
    const started = await call('/api/v1/protections/web-acme/sync', { method: 'POST', token: tokens.acme, body: {} });
    const events = await readEvents(api.url, ca, started.json.links.events, tokens.acme!);
    assert.equal(events.at(-1)![1].error.code, 'PROTECTION_PAUSED');
    const row = (await call('/api/v1/status', { token: tokens.acmeRead })).json.protections[0];
    assert.equal(row.paused.by, 'acme-ops');
    assert.equal((await call('/api/v1/protections/web-acme/pause', { method: 'POST', token: tokens.acmeRead, body: {} })).status, 403);
    const resumed = await call('/api/v1/protections/web-acme/resume', { method: 'POST', token: tokens.acme });
    assert.equal(resumed.status, 200, resumed.text);
    assert.equal(resumed.json.paused, null);
  });

  it('echoes a sane request id and makes one otherwise', async () => {
    const given = await call('/healthz', { headers: { 'x-request-id': 'portal-42' } });
    assert.equal(given.headers['x-request-id'], 'portal-42');
    const made = await call('/healthz', { headers: { 'x-request-id': 'bad id\twith tab' } });
    assert.match(String(made.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });
});

describe('HTTP API: a hypervisor behind the daemon that fails', function () {
  this.timeout(60_000);
  let t: TestApi;
  before(async () => {
    // A libvirtd socket that does not exist: the DR site's hypervisor is down.
    t = await startTestApi({ drUri: 'qemu+unix:///system?socket=/nonexistent/vmdr-test/libvirt-sock' });
  });
  after(() => t?.close());

  it("answers 502 with the hypervisor's own error, not a 500 of vmdr's", async () => {
    const made = await apiCall(t.api.url, t.ca, '/api/v1/tenants', { method: 'POST', token: t.tokens.operator, body: { name: 'initech' } });
    assert.equal(made.status, 502, made.text);
    assert.equal(made.json.error.code, 'HYPERVISOR_UNREACHABLE');
    assert.match(made.json.error.message, /cannot reach hypervisor/);
    assert.doesNotMatch(await readFile(join(t.dir, 'vmdr.yaml'), 'utf8'), /initech/, 'no tenant without its networks');
  });
});
