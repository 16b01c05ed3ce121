/**
 * The drill routes over real HTTPS and a real SQLite state file, on libvirt's test driver: the
 * configured drills with their next run, a run started as a 202 operation and followed as
 * server-sent events to its history row, the history and one run, each seen only by its tenant
 * (and the operators), and the audit record of a run. Also `vmdr drill` with --server.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createToken } from '../../../plugin/tenants/tokens.js';
import { apiCall, readEvents, type ApiCall } from '../../helpers/api-client.js';
import { startTestApi, type TestApi } from '../../helpers/api-instance.js';

const exec = promisify(execFile);
const CLI = join(import.meta.dirname, '..', '..', '..', 'dist', 'scripts', 'vmdr.js');

describe('HTTP API: drills (test:///default, HTTPS, SQLite)', function () {
  this.timeout(60_000);
  let t: TestApi;
  const call = (path: string, c: ApiCall = {}) => apiCall(t.api.url, t.ca, path, c);

  before(async () => {
    t = await startTestApi({
      more: `plans:
  - { name: plan-acme, tenant: acme, groups: [{ name: all, vms: [web-acme] }] }
  - { name: plan-globex, tenant: globex, groups: [{ name: all, vms: [db-globex] }] }
drills:
  - { name: acme-weekly, plan: plan-acme, schedule: "0 3 * * 1", timeLimit: 10m }
  - { name: globex-daily, plan: plan-globex, schedule: "30 2 * * *", timezone: Europe/Paris }
`,
    });
  });

  after(() => t?.close());

  it('lists the configured drills with their next run, a tenant only its own', async () => {
    const all = await call('/api/v1/drills', { token: t.tokens.operatorRead });
    assert.equal(all.status, 200);
    assert.deepEqual(
      all.json.map((d: Record<string, unknown>) => [d.name, d.plan, d.tenant, d.timezone, d.timeLimitMs, d.site]),
      [
        ['acme-weekly', 'plan-acme', 'acme', 'UTC', 600_000, 'dr'],
        ['globex-daily', 'plan-globex', 'globex', 'Europe/Paris', 1_800_000, 'dr'],
      ],
    );
    const next = new Date(all.json[0].nextRun);
    assert.equal(next.getUTCDay(), 1, 'a Monday');
    assert.equal(next.toISOString().slice(10), 'T03:00:00.000Z');
    assert.ok(next.getTime() > Date.now() && next.getTime() <= Date.now() + 7 * 86_400_000);
    const paris = new Date(all.json[1].nextRun);
    assert.equal(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Paris', hour: '2-digit', minute: '2-digit' }).format(paris), '02:30', '02:30 in Paris');
    const acme = await call('/api/v1/drills', { token: t.tokens.acmeRead });
    assert.deepEqual(acme.json.map((d: { name: string }) => d.name), ['acme-weekly']);
  });

  it('runs a drill as a 202 operation; its stream ends with the history row; the history and the run show it', async () => {
    const readOnly = await call('/api/v1/drills/acme-weekly/runs', { method: 'POST', token: t.tokens.acmeRead, body: {} });
    assert.equal(readOnly.status, 403);
    const started = await call('/api/v1/drills/acme-weekly/runs', { method: 'POST', token: t.tokens.acme, body: {} });
    assert.equal(started.status, 202, started.text);
    const events = await readEvents(t.api.url, t.ca, started.json.links.events, t.tokens.acme);
    const [name, end] = events.at(-1)!;
    // No recovery point on the test driver: the drill fails, and says why.
    assert.equal(name, 'failed');
    assert.equal(end.error.code, 'DRILL_FAILED');
    assert.equal(end.error.run.status, 'failed');
    assert.equal(end.error.run.trigger, 'api');
    assert.ok(events.some(([n, e]) => n === 'progress' && e.progress.phase === 'preflight'), 'the steps stream as progress');
    const id = end.error.run.id as string;

    const history = await call('/api/v1/drills/history', { token: t.tokens.acmeRead });
    assert.equal(history.status, 200);
    assert.deepEqual(history.json.map((r: { id: string }) => r.id), [id]);
    const one = await call(`/api/v1/drills/history/${id}`, { token: t.tokens.acmeRead });
    assert.equal(one.status, 200);
    assert.equal(one.json.run.failover, end.error.run.failover);
    assert.equal(one.json.report.id, end.error.run.failover);
    assert.equal(one.json.report.kind, 'test');

    const theirs = await call(`/api/v1/drills/history/${id}`, { token: t.tokens.globex });
    const nothing = await call('/api/v1/drills/history/dr-20000101T000000-0000', { token: t.tokens.globex });
    assert.equal(theirs.status, 404);
    assert.equal(theirs.text, nothing.text.replaceAll('dr-20000101T000000-0000', id), 'another tenant\'s run answers as one that does not exist');
    assert.deepEqual((await call('/api/v1/drills/history', { token: t.tokens.globex })).json, []);
    assert.deepEqual((await call('/api/v1/drills/history?tenant=acme', { token: t.tokens.globex })).json, [], 'asking for another tenant shows nothing');
    assert.deepEqual((await call('/api/v1/drills/history?tenant=acme', { token: t.tokens.operatorRead })).json.map((r: { id: string }) => r.id), [id]);

    const audit = await call('/api/v1/audit', { token: t.tokens.operatorRead });
    const record = audit.json.find((a: { action: string }) => a.action === 'drill.run');
    assert.ok(record, JSON.stringify(audit.json));
    assert.equal(record.tenant, 'acme');
    assert.equal(record.object, 'acme-weekly');
  });

  it('answers another tenant\'s drill as one that does not exist', async () => {
    const theirs = await call('/api/v1/drills/globex-daily/runs', { method: 'POST', token: t.tokens.acme, body: {} });
    const nothing = await call('/api/v1/drills/nobody/runs', { method: 'POST', token: t.tokens.acme, body: {} });
    assert.equal(theirs.status, 404);
    assert.equal(theirs.json.error.code, 'DRILL_UNKNOWN');
    assert.equal(theirs.text, nothing.text.replaceAll('nobody', 'globex-daily'));
  });

  it('vmdr drill run|history|show --server: exit 1 and one line when the drill fails; the history as JSON', async () => {
    const token = createToken(t.state, { name: 'cli', tenant: 'globex', role: 'operate' }).token;
    const env = { ...process.env, VMDR_SERVER: t.api.url, VMDR_SERVER_FINGERPRINT: t.api.fingerprint, VMDR_TOKEN: token };
    const config = join(t.dir, 'vmdr.yaml');
    const vmdr = (...args: string[]) =>
      exec(process.execPath, [CLI, ...args, '--config', config], { env, timeout: 30_000 }).then(
        (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const ran = await vmdr('drill', 'run', 'globex-daily');
    assert.equal(ran.code, 1, ran.stderr);
    const lines = ran.stderr.trim().split('\n');
    assert.equal(lines.length, 1, ran.stderr);
    assert.match(lines[0]!, /^vmdr: drill "globex-daily" failed \(dr-\d{8}T\d{6}-[0-9a-f]{4}\): /);
    assert.match(ran.stdout, /^drill globex-daily \(dr-[^,]+, plan plan-globex, tenant globex, api\): failed in [\d.]+ s: /m);
    const history = await vmdr('drill', 'history', '--json');
    assert.equal(history.code, 0, history.stderr);
    const runs = JSON.parse(history.stdout) as { id: string; drill: string; status: string }[];
    assert.deepEqual(runs.map((r) => [r.drill, r.status]), [['globex-daily', 'failed']], 'only its tenant\'s');
    const show = await vmdr('drill', 'show', runs[0]!.id);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^failover fo-\S+ \(test, plan plan-globex\): failed/m);
    const missing = await vmdr('drill', 'run', 'acme-weekly');
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'vmdr: no drill "acme-weekly"\n');
  });
});
