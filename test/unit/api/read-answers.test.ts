/**
 * The API's most read answers, as a portal polling them gets them (real HTTPS, a real SQLite state
 * file, libvirt's test driver): status made once per look and audience (with the rows' consistency groups), points built without zod's
 * pass and still exactly the documented fields, and one request log line per request with its id,
 * never the token.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { ApiServer } from '../../../plugin/api/server.js';
import { StatusCache } from '../../../plugin/api/status-cache.js';
import { withoutHostPaths } from '../../../plugin/api/routes/status.js';
import type { Config } from '../../../plugin/config/schema.js';
import type { SiteConnections } from '../../../plugin/sites/connections.js';
import type { SiteIdentity } from '../../../plugin/sites/identity.js';
import { insertPoint } from '../../../plugin/state/points.js';
import type { StateStore } from '../../../plugin/state/store.js';
import { createToken } from '../../../plugin/tenants/tokens.js';
import { apiCall, type ApiCall } from '../../helpers/api-client.js';
import { startLoopbackApi } from '../../helpers/api-instance.js';
import { closeTestConfig, openTestConfig, testProtections, twoTenants, writeTestConfig } from '../../helpers/test-config.js';

const GROUP_INSTANT = `acme-app@${Date.parse('2026-12-01T10:03:00Z')}`;
const POINT_FIELDS = ['id', 'protection', 'seq', 'time', 'committedAt', 'kind', 'checkpoint', 'since', 'bytesShipped', 'dataBytes', 'zeroBytes', 'pinned', 'replacedSource', 'tier', 'allocatedBytes', 'consistency', 'consistencyIssue', 'freezeWindowMs', 'groupInstant', 'disks'];

describe('HTTP API reads: status, points, the request log (test:///default, HTTPS, SQLite)', function () {
  this.timeout(60_000);
  let dir: string;
  let state: StateStore;
  let sites: SiteConnections;
  let api: ApiServer;
  let ca: Buffer;
  let file: string;
  let config: Config;
  let log = '';
  const tokens: Record<string, string> = {};
  const call = (path: string, c: ApiCall = {}) => apiCall(api.url, ca, path, c);

  before(async () => {
    ({ dir, file } = await writeTestConfig(
      'vmdr-api-reads',
      `${twoTenants()}protections:\n${testProtections(['web-acme', 'acme'], ['db-acme', 'acme'], ['db-globex', 'globex'], ['infra'])}` +
        'consistencyGroups:\n  - { name: acme-app, protections: [web-acme, db-acme] }\n',
    ));
    const opened = await openTestConfig(file);
    ({ config, state, sites } = opened);
    const lines = new PassThrough().setEncoding('utf8');
    lines.on('data', (c: string) => (log += c));
    let credentials: SiteIdentity;
    ({ api, credentials } = await startLoopbackApi(dir, { file, ...opened, log: lines }));
    ca = credentials.cert;
    tokens.operator = createToken(state, { name: 'ops', role: 'read' }).token;
    tokens.acme = createToken(state, { name: 'acme-portal', tenant: 'acme', role: 'read' }).token;
    tokens.globex = createToken(state, { name: 'globex-portal', tenant: 'globex', role: 'read' }).token;
    const t0 = Date.parse('2026-12-01T10:00:00Z');
    for (const seq of [1, 2, 3]) {
      insertPoint(state.db, {
        protection: 'web-acme',
        seq,
        timeMs: t0 + seq * 60_000,
        committedAtMs: t0 + seq * 60_000 + 1_500,
        checkpoint: `vmdr-cp-${seq}`,
        since: seq === 1 ? null : `vmdr-cp-${seq - 1}`,
        kind: seq === 1 ? 'full' : 'incremental',
        bytesShipped: 1000 * seq,
        dataBytes: 900 * seq,
        zeroBytes: 100,
        pinned: seq === 2,
        disks: [{ disk: 'vda', image: `point-${seq}.qcow2`, sizeBytes: 64 * 1024 * 1024 }],
        // The newest is a group point: db-acme has its point of that instant too.
        ...(seq === 3 ? { groupInstant: GROUP_INSTANT } : {}),
      });
    }
    insertPoint(state.db, {
      protection: 'db-acme',
      seq: 1,
      timeMs: t0 + 3 * 60_000,
      committedAtMs: t0 + 3 * 60_000 + 1_000,
      checkpoint: 'vmdr-cp-db-1',
      since: null,
      kind: 'full',
      bytesShipped: 1000,
      dataBytes: 1000,
      zeroBytes: 0,
      pinned: false,
      disks: [{ disk: 'vda', image: 'point-1.qcow2', sizeBytes: 64 * 1024 * 1024 }],
      groupInstant: GROUP_INSTANT,
    });
  });

  after(() => closeTestConfig(dir, { api, sites, state }));

  it("answers status with each token's own rows, the same bytes to every reader of one look", async () => {
    const all = await call('/api/v1/status', { token: tokens.operator });
    assert.equal(all.status, 200);
    assert.match(String(all.headers['content-type']), /^application\/json/);
    assert.deepEqual(all.json.protections.map((r: { protection: string }) => r.protection), ['web-acme', 'db-acme', 'db-globex', 'infra']);
    assert.equal(all.json.protections[0].lastPoint.id, 'rp-3');

    const acme = await call('/api/v1/status', { token: tokens.acme });
    const globex = await call('/api/v1/status', { token: tokens.globex });
    assert.deepEqual(acme.json.protections.map((r: { protection: string; tenant: string }) => [r.protection, r.tenant]), [['web-acme', 'acme'], ['db-acme', 'acme']]);
    assert.deepEqual(globex.json.protections.map((r: { protection: string }) => r.protection), ['db-globex']);
    assert.equal(acme.json.takenAt, all.json.takenAt, 'one look for every audience');
    assert.deepEqual(acme.json.protections, all.json.protections.slice(0, 2), "a tenant's rows are the operator's rows of that tenant");
    // The consistency group of the rows shown, once; none for a tenant without one.
    assert.deepEqual(
      acme.json.groups.map((g: { group: string; members: string[]; lastGroupPoint: { id: string } | null; lastCycle: unknown }) => [g.group, g.members, g.lastGroupPoint?.id, g.lastCycle]),
      [['acme-app', ['web-acme', 'db-acme'], GROUP_INSTANT, null]],
    );
    assert.deepEqual(acme.json.groups[0], acme.json.protections[0].consistencyGroup);
    assert.deepEqual(globex.json.groups, []);
    assert.equal(globex.json.protections[0].consistencyGroup, null);

    // Read again within the look: the very same answer, and still each audience's own.
    assert.equal((await call('/api/v1/status', { token: tokens.acme })).text, acme.text);
    assert.equal((await call('/api/v1/status', { token: tokens.globex })).text, globex.text);
    assert.equal((await call('/api/v1/status', { token: tokens.operator })).text, all.text);
  });

  it("answers points with exactly the documented fields, oldest first; the DR host's image paths only to an operator", async () => {
    const mine = await call('/api/v1/protections/web-acme/points', { token: tokens.acme });
    assert.equal(mine.status, 200);
    assert.match(String(mine.headers['content-type']), /^application\/json/);
    assert.deepEqual(mine.json.map((p: { id: string }) => p.id), ['rp-1', 'rp-2', 'rp-3']);
    for (const p of mine.json) assert.deepEqual(Object.keys(p), POINT_FIELDS);
    assert.deepEqual(mine.json[1], {
      id: 'rp-2',
      protection: 'web-acme',
      seq: 2,
      time: '2026-12-01T10:02:00.000Z',
      committedAt: '2026-12-01T10:02:01.500Z',
      kind: 'incremental',
      checkpoint: 'vmdr-cp-2',
      since: 'vmdr-cp-1',
      bytesShipped: 2000,
      dataBytes: 1800,
      zeroBytes: 100,
      pinned: true,
      replacedSource: null,
      // Retention (keep 24) keeps it for its pin; no image was written, so it occupies nothing.
      tier: 'pinned',
      allocatedBytes: 0,
      consistency: 'crash',
      consistencyIssue: null,
      freezeWindowMs: null,
      groupInstant: null,
      disks: [{ disk: 'vda', sizeBytes: 64 * 1024 * 1024 }],
    });
    assert.deepEqual(mine.json.map((p: { tier: string }) => p.tier), ['keep', 'pinned', 'newest']);

    const ops = await call('/api/v1/protections/web-acme/points', { token: tokens.operator });
    assert.deepEqual(Object.keys(ops.json[1].disks[0]), ['disk', 'sizeBytes', 'image']);
    assert.ok(ops.json[1].disks[0].image.startsWith(join(dir, 'replicas')) && ops.json[1].disks[0].image.endsWith('/web-acme/vda/point-2.qcow2'), ops.json[1].disks[0].image);
    assert.equal((await call('/api/v1/protections/web-acme/points', { token: tokens.globex })).status, 404);
    assert.deepEqual((await call('/api/v1/protections/db-acme/points', { token: tokens.acme })).json.map((p: { id: string; groupInstant: string }) => [p.id, p.groupInstant]), [['rp-1', GROUP_INSTANT]]);
  });

  it('keeps answering from the previous look while the next is taken, up to twice the age limit; then readers wait for a new one', async () => {
    const cache = new StatusCache(() => ({ file, config, state, sites }), 1_000);
    const first = await cache.read();
    assert.equal(first.rows.length, 4);
    assert.equal((await cache.read()).takenAt.getTime(), first.takenAt.getTime(), 'one look within the age limit');
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const stale = await cache.read();
    assert.equal(stale.takenAt.getTime(), first.takenAt.getTime(), 'past the limit, the previous look is answered while the next is taken');
    const deadline = Date.now() + 10_000;
    let next = stale;
    while (next.takenAt.getTime() === first.takenAt.getTime() && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      next = await cache.read();
    }
    assert.ok(next.takenAt > first.takenAt, 'the next look replaced it');
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    const asked = Date.now();
    const fresh = await cache.read();
    assert.ok(fresh.takenAt.getTime() >= asked, 'past twice the limit, the reader waits for a new look');
  });

  it('logs one line per request, when answered: its id, route, status and time, never the token', async () => {
    const r = await call('/api/v1/status', { token: tokens.acme, headers: { 'x-request-id': 'portal-7' } });
    assert.equal(r.status, 200);
    const refused = await call('/api/v1/status', { token: `${tokens.acme!.slice(0, -4)}AAAA`, headers: { 'x-request-id': 'portal-8' } });
    assert.equal(refused.status, 401);
    await new Promise((resolve) => setImmediate(resolve));
    const lines = log.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    const of = (id: string) => lines.filter((l) => l.reqId === id);
    assert.equal(of('portal-7').length, 1, log);
    assert.deepEqual([of('portal-7')[0]!.msg, of('portal-7')[0]!.req.url, of('portal-7')[0]!.res.statusCode], ['request completed', '/api/v1/status', 200]);
    assert.equal(typeof of('portal-7')[0]!.responseTime, 'number');
    assert.deepEqual(of('portal-8').map((l) => l.res?.statusCode), [401]);
    for (const secret of [tokens.acme!, tokens.acme!.split('_').pop()!]) assert.ok(!log.includes(secret), 'no token in the log');
  });

  it("keeps the DR host's paths out of a tenant's status: a problem's words, not where the provider keeps things", () => {
    const text = JSON.stringify({ pointsProblem: '/etc/vmdr/vmdr.yaml: site "dr" has no endpoint', url: 'https://dr:8443/api/v1', time: '2026-12-01T10:00:00.000Z' });
    assert.deepEqual(JSON.parse(withoutHostPaths(text)), {
      pointsProblem: '(a path of the DR host): site "dr" has no endpoint',
      url: 'https://dr:8443/api/v1',
      time: '2026-12-01T10:00:00.000Z',
    });
  });
});
