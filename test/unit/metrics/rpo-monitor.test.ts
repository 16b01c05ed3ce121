import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../../plugin/config/load.js';
import type { Config } from '../../../plugin/config/schema.js';
import { Notifier } from '../../../plugin/notifications/notifier.js';
import { notify } from '../../../plugin/notifications/webhook.js';
import type { WebhookFailed } from '../../../plugin/notifications/errors.js';
import { ReplicationLag } from '../../../plugin/replication/lag.js';
import { RpoMonitor, type RpoEvent } from '../../../plugin/replication/rpo-monitor.js';
import { StateStore } from '../../../plugin/state/store.js';
import { recordSyncEnd, recordSyncStart } from '../../../plugin/state/sync-runs.js';
import { committedCycle, failedCycle } from '../../helpers/cycles.js';
import { startWebhookReceiver, type WebhookReceiver, type WebhookRequest } from '../../helpers/webhook-receiver.js';

const T0 = Date.parse('2026-12-01T10:00:00Z');

function config(notifications: string): Config {
  return parseConfig(
    `version: 1
sites:
  - name: src
    uri: test:///default
tenants:
  - name: acme
protections:
  - name: web
    tenant: acme
    rpo: 2s
    source: { site: src, vm: web }
    target: { site: src, vm: web-dr, nics: [{ network: n }] }
  - name: db
    rpo: 1m
    source: { site: src, vm: db }
    target: { site: src, vm: db-dr, nics: [{ network: n }] }
${notifications}`,
    'vmdr.yaml',
  );
}

describe('RPO monitor and webhooks', () => {
  let root: string;
  let hook: WebhookReceiver;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-rpo-'));
    hook = await startWebhookReceiver();
  });
  afterEach(async () => {
    await hook.close();
    await rm(root, { recursive: true, force: true });
  });

  it('posts one signed rpo-breached when the lag passes the RPO, none while it stays so, one rpo-recovered when a point brings it back', async () => {
    const secretFile = join(root, 'webhook.key');
    await writeFile(secretFile, 'test-secret-key\n', { mode: 0o600 });
    const cfg = config(`notifications:\n  webhooks:\n    - url: ${hook.url}\n      secretFile: ${secretFile}\n`);
    let clock = T0;
    const now = () => clock;
    const lag = new ReplicationLag(now);
    const warnings: WebhookFailed[] = [];
    const notifier = new Notifier(cfg.notifications, { onWarning: (w) => warnings.push(w) });
    const monitor = new RpoMonitor(cfg.protections, lag, { now, onEvent: (e) => notifier.tell(e.protection, e) });
    // The first attempt of the breach fails: the recovery, told while it waits to retry, still comes after it.
    hook.answers.push(503);

    // No point yet: nothing to judge, however long it has been.
    clock = T0 + 3_600_000;
    assert.deepEqual(monitor.check(), []);
    clock = T0;
    lag.observe(committedCycle('web', T0 - 500));
    lag.observe(committedCycle('db', T0 - 500));
    clock = T0 + 1_000;
    assert.deepEqual(monitor.check(), []);

    // The DR site goes away: cycles fail, the lag grows past 2 s.
    lag.observe(failedCycle('web', 'RECEIVER_UNREACHABLE'));
    clock = T0 + 2_000;
    const breached = monitor.check();
    assert.deepEqual(breached.map((e) => [e.event, e.protection]), [['rpo-breached', 'web']]);
    for (let i = 3; i <= 30; i++) {
      clock = T0 + i * 1_000;
      lag.observe(failedCycle('web', 'RECEIVER_UNREACHABLE'));
      assert.deepEqual(monitor.check(), [], `still breached at +${i} s: no new event`);
    }
    assert.equal(monitor.breached('web'), true);
    assert.equal(monitor.breached('db'), false);

    // The DR site is back: a new point, the lag falls under the RPO.
    lag.observe(committedCycle('web', T0 + 29_500));
    clock = T0 + 30_200;
    const recovered = monitor.check();
    assert.deepEqual(recovered.map((e) => [e.event, e.protection]), [['rpo-recovered', 'web']]);
    clock = T0 + 31_000;
    assert.deepEqual(monitor.check(), []);

    await notifier.idle();
    assert.equal(hook.requests.length, 3, 'one breach (its first attempt answered 503, then retried), one recovery');
    assert.deepEqual(warnings, []);
    const [refused, breach, recovery] = hook.requests as [WebhookRequest, WebhookRequest, WebhookRequest];
    assert.equal(refused.body, breach.body);
    assert.equal(breach.method, 'POST');
    assert.equal(breach.path, '/hooks/vmdr');
    assert.equal(breach.headers['content-type'], 'application/json');
    assert.equal(breach.headers['x-vmdr-event'], 'rpo-breached');
    assert.deepEqual(breach.json, { event: 'rpo-breached', protection: 'web', tenant: 'acme', lag: 2.5, rpo: 2, at: '2026-12-01T10:00:02.000Z' });
    assert.deepEqual(recovery.json, { event: 'rpo-recovered', protection: 'web', tenant: 'acme', lag: 0.7, rpo: 2, at: '2026-12-01T10:00:30.200Z' });
    // The receiver checks the signature over the exact bytes it got, with the key without its newline.
    for (const r of [breach, recovery]) {
      const expected = `sha256=${createHmac('sha256', 'test-secret-key').update(r.body).digest('hex')}`;
      assert.equal(r.headers['x-vmdr-signature'], expected);
    }
    assert.notEqual(breach.headers['x-vmdr-delivery'], recovery.headers['x-vmdr-delivery']);
  });

  it('does not judge a paused protection (failed over): no breach while it is, and it is judged again after its next point', () => {
    const cfg = config('');
    let clock = T0;
    const now = () => clock;
    const lag = new ReplicationLag(now);
    const events: RpoEvent[] = [];
    const monitor = new RpoMonitor(cfg.protections, lag, { now, onEvent: (e) => events.push(e) });
    lag.observe(committedCycle('web', T0));
    lag.observe({ protection: 'web', paused: { reason: 'failed-over', failover: 'fo-test' } });
    clock = T0 + 600_000;
    assert.deepEqual(monitor.check(), []);
    lag.observe(committedCycle('web', T0 + 599_000));
    clock = T0 + 600_500;
    assert.deepEqual(monitor.check(), []);
    clock = T0 + 603_000;
    assert.deepEqual(monitor.check().map((e) => e.event), ['rpo-breached']);
    assert.deepEqual(events.map((e) => e.event), ['rpo-breached']);
  });

  it("after a restart, judges a protection from this host's sync history once its loop ended a cycle (not before: it may be paused)", () => {
    const state = StateStore.open(join(root, 'state.db'));
    try {
      const run = recordSyncStart(state, { protection: 'web', kind: 'incremental', checkpoint: 'vmdr-1', since: null });
      recordSyncEnd(state, run, { outcome: 'committed', point: 'rp-1' });
      const cfg = config('');
      const lag = new ReplicationLag();
      lag.seed(state, ['web', 'db']);
      const later = Date.now() + 60_000;
      const monitor = new RpoMonitor(cfg.protections, lag, { now: () => later, onEvent: () => undefined });
      assert.deepEqual(monitor.check(), [], 'no cycle ended yet');
      lag.observe(failedCycle('web', 'RECEIVER_UNREACHABLE'));
      lag.observe(failedCycle('db', 'RECEIVER_UNREACHABLE'));
      const events = monitor.check();
      assert.deepEqual(events.map((e) => [e.event, e.protection]), [['rpo-breached', 'web']], 'db has no point in the history: not judged');
      assert.ok(events[0]!.lag >= 60, `lag from the history's run: ${events[0]!.lag}`);
    } finally {
      state.close();
    }
  });

  it('retries a webhook that answers 503 with the same delivery id, and is delivered once', async () => {
    const cfg = config(`notifications:\n  webhooks:\n    - url: ${hook.url}\n`);
    hook.answers.push(503);
    const event = { event: 'rpo-breached' as const, at: new Date(T0).toISOString(), protection: 'web' };
    const warnings: WebhookFailed[] = [];
    const deliveries = await notify(cfg.notifications, event, { retryDelayMs: 50, onWarning: (w) => warnings.push(w) });
    assert.deepEqual(deliveries, [{ webhook: new URL(hook.url).origin, delivered: true, attempts: 2, status: 204 }]);
    assert.equal(hook.requests.length, 2);
    assert.equal(hook.requests[0]!.headers['x-vmdr-delivery'], hook.requests[1]!.headers['x-vmdr-delivery']);
    assert.equal(hook.requests[1]!.body, JSON.stringify(event));
    assert.equal(hook.requests[0]!.headers['x-vmdr-signature'], undefined, 'no secret file: unsigned');
    assert.deepEqual(warnings, []);
  });

  it('does not retry a 4xx; gives up on a webhook that never answers after its timeout and attempts; never throws', async () => {
    const cfg = config(`notifications:\n  webhooks:\n    - url: ${hook.url}\n      timeout: 1s\n`);
    const event = { event: 'rpo-recovered' as const, at: new Date(T0).toISOString() };
    const warnings: WebhookFailed[] = [];
    const onWarning = (w: WebhookFailed) => warnings.push(w);

    hook.answers.push(404);
    const refused = await notify(cfg.notifications, event, { retryDelayMs: 50, onWarning });
    assert.deepEqual(refused.map((d) => [d.delivered, d.attempts, d.status]), [[false, 1, 404]]);
    assert.equal(hook.requests.length, 1);
    assert.equal(warnings[0]!.code, 'WEBHOOK_FAILED');
    assert.equal(warnings[0]!.message, `webhook ${new URL(hook.url).origin}: event rpo-recovered not delivered after 1 attempt: it answered HTTP 404`);

    hook.answers.push('hang', 'hang');
    const started = Date.now();
    const timedOut = await notify(cfg.notifications, event, { attempts: 2, retryDelayMs: 50, onWarning });
    const took = Date.now() - started;
    assert.deepEqual(timedOut.map((d) => [d.delivered, d.attempts]), [[false, 2]]);
    assert.ok(took >= 2_000 && took < 6_000, `two attempts of 1 s each: took ${took} ms`);
    assert.equal(warnings[1]!.message, `webhook ${new URL(hook.url).origin}: event rpo-recovered not delivered after 2 attempts: no answer within 1 s`);

    // Nothing listens there any more: refused at once, said as a warning.
    await hook.close();
    const down = await notify(cfg.notifications, event, { attempts: 2, retryDelayMs: 50, onWarning });
    assert.deepEqual(down.map((d) => d.delivered), [false]);
    assert.match(warnings[2]!.message, /not delivered after 2 attempts: fetch failed: ECONNREFUSED$/);
    hook = await startWebhookReceiver();
  });

  it('sends each webhook only the events it asked for, and one that cannot read its secret file sends nothing', async () => {
    const other = await startWebhookReceiver('/other');
    try {
      const cfg = config(
        `notifications:\n  webhooks:\n    - url: ${hook.url}\n      events: [rpo-recovered]\n    - url: ${other.url}\n      secretFile: ${join(root, 'missing.key')}\n`,
      );
      const warnings: WebhookFailed[] = [];
      const deliveries = await notify(cfg.notifications, { event: 'rpo-breached', at: new Date(T0).toISOString() }, { onWarning: (w) => warnings.push(w) });
      assert.deepEqual(deliveries.map((d) => [d.webhook, d.delivered, d.attempts]), [[new URL(other.url).origin, false, 0]]);
      assert.match(warnings[0]!.message, /cannot read its secret file .*missing\.key/);
      assert.equal(hook.requests.length + other.requests.length, 0);
    } finally {
      await other.close();
    }
  });

  it('refuses a webhook URL that is not http(s), naming the place in the config', () => {
    assert.throws(() => config(`notifications:\n  webhooks:\n    - url: ftp://127.0.0.1/hook\n`), /notifications\.webhooks\[0\]\.url: an http:\/\/ or https:\/\/ URL/);
    assert.throws(() => config(`notifications:\n  webhooks:\n    - url: ${hook.url}\n      events: [coffee-ready]\n`), /notifications\.webhooks\[0\]\.events\[0\]/);
  });
});
