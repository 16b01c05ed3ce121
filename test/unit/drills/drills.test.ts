/**
 * Drills on libvirt's test driver with a real SQLite state file and a real webhook endpoint on
 * loopback: the history a drill leaves (failed with why, skipped when its plan is busy), the
 * webhook told of a failed drill (and a webhook that is down changes nothing), the scheduler
 * firing and stopping, and a drill whose process died torn down and recorded as interrupted.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config, Drill } from '../../../plugin/config/schema.js';
import { recoverInterruptedDrills } from '../../../plugin/drills/recover.js';
import { runDrill, type DrillDeps } from '../../../plugin/drills/run.js';
import { DrillScheduler, drillsOfSite, nextRunOf } from '../../../plugin/drills/scheduler.js';
import { FailoverResults } from '../../../plugin/metrics/failover-results.js';
import { Notifier } from '../../../plugin/notifications/notifier.js';
import type { SiteConnections } from '../../../plugin/sites/connections.js';
import { getDrillRun, insertDrillRun, listDrillRuns } from '../../../plugin/state/drills.js';
import { getFailover, insertFailover } from '../../../plugin/state/failovers.js';
import type { StateStore } from '../../../plugin/state/store.js';
import { closeTestConfig, openTestConfig, testProtections, twoTenants, writeTestConfig } from '../../helpers/test-config.js';
import { startWebhookReceiver, type WebhookReceiver } from '../../helpers/webhook-receiver.js';

describe('drills: history, skips, webhooks, the scheduler, interrupted drills (test:///default)', function () {
  this.timeout(60_000);
  let dir: string;
  let config: Config;
  let file: string;
  let state: StateStore;
  let sites: SiteConnections;
  let hook: WebhookReceiver;
  let deps: DrillDeps;
  const drill = (name: string): Drill => config.drills.find((d) => d.name === name)!;

  before(async () => {
    hook = await startWebhookReceiver();
    ({ dir, file } = await writeTestConfig(
      'vmdr-drills',
      `${twoTenants()}protections:
${testProtections(['web-acme', 'acme'], ['db-globex', 'globex'])}plans:
  - { name: plan-acme, tenant: acme, groups: [{ name: all, vms: [web-acme] }] }
  - { name: plan-globex, tenant: globex, groups: [{ name: all, vms: [db-globex] }] }
drills:
  - { name: monthly-acme, plan: plan-acme, schedule: "0 3 1 * *" }
  - { name: every-second, plan: plan-globex, schedule: "* * * * * *", timezone: Europe/Paris, timeLimit: 1m }
notifications:
  webhooks:
    - { url: "${hook.url}", events: [drill-failed, drill-passed], timeout: 2s }
`,
    ));
    ({ config, state, sites } = await openTestConfig(file));
  });

  beforeEach(() => {
    hook.requests.length = 0;
    deps = { config, file, sites, state, notifier: new Notifier(config.notifications, { retryDelayMs: 10 }) };
  });

  after(async () => {
    await hook?.close();
    await closeTestConfig(dir, { sites, state });
  });

  it('reads the drills of the config: time zone UTC and a 30 m time limit unless it says', () => {
    assert.equal(drill('monthly-acme').timezone, 'UTC');
    assert.equal(drill('monthly-acme').timeLimit, 30 * 60_000);
    assert.equal(drill('every-second').timeLimit, 60_000);
    assert.equal(nextRunOf(drill('monthly-acme'))!.toISOString().slice(10), 'T03:00:00.000Z', 'the first of a month, 03:00 UTC');
    assert.deepEqual(drillsOfSite(config, 'dr').map((d) => d.name), ['monthly-acme', 'every-second'], 'the DR site\'s daemon runs them');
    assert.deepEqual(drillsOfSite(config, 'src'), [], 'a source site runs none');
  });

  it('a drill that fails leaves a failed history row with why, and tells the webhook', async () => {
    const { run, report } = await runDrill(deps, drill('monthly-acme'), 'manual');
    assert.equal(run.status, 'failed');
    assert.equal(run.trigger, 'manual');
    assert.equal(run.tenant, 'acme');
    assert.ok(run.failover?.startsWith('fo-'), 'the test failover it ran is recorded');
    assert.equal(getFailover(state.db, run.failover!)!.kind, 'test');
    assert.ok(run.reason && run.reason.message.length > 0, JSON.stringify(run.reason));
    assert.equal(report?.id, run.failover);
    assert.deepEqual(getDrillRun(state.db, run.id), run);
    const counted = new FailoverResults(state).take().filter((o) => o.kind === 'test');
    assert.deepEqual(counted, [{ protection: 'web-acme', kind: 'test', result: 'failed' }], 'the failover metrics count it as a drill');
    const [told] = await hook.waitFor(1);
    assert.equal(told!.headers['x-vmdr-event'], 'drill-failed');
    assert.equal(told!.json.drill, 'monthly-acme');
    assert.equal(told!.json.drillRun, run.id);
    assert.deepEqual(told!.json.reason, run.reason);
  });

  it("a webhook that is slow neither delays the drill's end nor changes its result", async () => {
    hook.answers.push('hang', 'hang', 'hang');
    const warnings: string[] = [];
    deps.notifier = new Notifier(config.notifications, { retryDelayMs: 10, onWarning: (e) => warnings.push(e.code) });
    const started = Date.now();
    const { run } = await runDrill(deps, drill('monthly-acme'), 'manual');
    assert.ok(Date.now() - started < 1_500, `the drill ended ${Date.now() - started} ms after it started, waiting for no webhook (each attempt may take 2 s)`);
    assert.equal(run.status, 'failed');
    await (deps.notifier as Notifier).idle();
    assert.deepEqual(warnings, ['WEBHOOK_FAILED'], 'three attempts timed out, one warning');
    assert.equal(getDrillRun(state.db, run.id)!.status, 'failed');
  });

  it("runs the drill's own runbook rather than its plan's", async () => {
    // A runbook the config names but whose file is gone by the time the drill runs: the drill fails on it, before anything changes.
    const gone = join(dir, 'drill-runbook.yaml');
    const withRunbook = { ...deps, config: { ...config, runbooks: [{ name: 'drill-only', file: gone }] } };
    const { run } = await runDrill(withRunbook, { ...drill('monthly-acme'), runbook: 'drill-only' }, 'manual');
    assert.equal(run.status, 'failed');
    assert.equal(run.reason?.code, 'RUNBOOK_INVALID', JSON.stringify(run.reason));
    assert.ok(run.reason?.message.includes(gone), run.reason?.message);
  });

  it('a webhook that is down does not change the drill\'s result', async () => {
    hook.answers.push(503, 503, 503);
    const warnings: string[] = [];
    deps.notifier = new Notifier(config.notifications, { retryDelayMs: 10, onWarning: (e) => warnings.push(e.code) });
    const { run } = await runDrill(deps, drill('monthly-acme'), 'manual');
    assert.equal(run.status, 'failed');
    await (deps.notifier as Notifier).idle();
    assert.equal(hook.requests.length, 3, 'tried three times');
    assert.deepEqual(warnings, ['WEBHOOK_FAILED']);
    assert.equal(getDrillRun(state.db, run.id)!.status, 'failed');
  });

  it('skips a drill whose plan another drill still runs, and says so in the history', async () => {
    const other = insertDrillRun(state.db, { id: 'dr-test-running', drill: 'monthly-acme', plan: 'plan-acme', tenant: 'acme', trigger: 'schedule', startedAtMs: Date.now() });
    try {
      const { run, report } = await runDrill(deps, drill('monthly-acme'), 'api');
      assert.equal(run.status, 'skipped');
      assert.equal(run.failover, null);
      assert.equal(report, null);
      assert.equal(run.reason?.code, 'DRILL_PLAN_BUSY');
      assert.match(run.reason!.message, /^drill "monthly-acme" skipped: drill "monthly-acme" of plan "plan-acme" \(dr-test-running\) still runs$/);
      await sleep(200);
      assert.equal(hook.requests.length, 0, 'a skip is not a failure: the webhook is not told');
    } finally {
      state.db.prepare('DELETE FROM drill_runs WHERE id = ?').run(other.id);
    }
  });

  it('skips a drill whose plan a failover of another host holds', async () => {
    insertFailover(state.db, { id: 'fo-elsewhere', kind: 'planned', plan: null, request: JSON.stringify({ kind: 'planned', protections: ['web-acme'] }), startedAtMs: Date.now(), failureAtMs: Date.now() });
    state.db.prepare('INSERT INTO failover_locks (protection, failover, host, pid) VALUES (?, ?, ?, ?)').run('web-acme', 'fo-elsewhere', 'another-host', 1);
    try {
      const { run } = await runDrill(deps, drill('monthly-acme'), 'manual');
      assert.equal(run.status, 'skipped');
      assert.equal(run.reason?.code, 'DRILL_PLAN_BUSY');
      assert.match(run.reason!.message, /protection "web-acme" is being failed over by fo-elsewhere right now/);
    } finally {
      state.db.prepare('DELETE FROM failovers WHERE id = ?').run('fo-elsewhere');
    }
  });

  it('the scheduler runs a drill on its schedule, and runs nothing once stopped', async () => {
    const before = listDrillRuns(state.db, { limit: 500 }).length;
    const scheduler = new DrillScheduler(deps, [drill('every-second')]);
    scheduler.start();
    try {
      const next = scheduler.nextRuns()['every-second']!;
      assert.ok(next.getTime() - Date.now() <= 1_000, `fires within a second: ${next.toISOString()}`);
      const deadline = Date.now() + 10_000;
      while (!listDrillRuns(state.db, { limit: 500 }).some((r) => r.trigger === 'schedule' && r.status !== 'running')) {
        assert.ok(Date.now() < deadline, 'a scheduled drill ended within 10 s');
        await sleep(50);
      }
    } finally {
      // Stopped even when the test failed: drills fired after the file closed its sites would open connections of their own.
      await scheduler.stop();
    }
    const stopped = listDrillRuns(state.db, { limit: 500 });
    assert.ok(stopped.every((r) => r.status !== 'running'), 'stop waits for the drills it started');
    await sleep(2_100);
    assert.equal(listDrillRuns(state.db, { limit: 500 }).length, stopped.length, 'nothing fires after stop');
    const scheduled = stopped.filter((r) => r.trigger === 'schedule');
    assert.ok(scheduled.length >= 1 && stopped.length > before);
    assert.ok(scheduled.every((r) => r.drill === 'every-second' && r.tenant === 'globex'));
  });

  /** What a drill of plan-acme whose process was killed leaves: its running row, its test failover holding web-acme. */
  const killedDrill = (id: string, failover: string) => {
    const dead = spawnSync('true').pid!;
    const started = Date.now();
    state.db
      .prepare(`INSERT INTO drill_runs (id, drill, plan, tenant, failover, trigger, status, started_at_ms, host, pid) VALUES (?, ?, ?, ?, ?, 'schedule', 'running', ?, ?, ?)`)
      .run(id, 'monthly-acme', 'plan-acme', 'acme', failover, started, hostname(), dead);
    insertFailover(state.db, { id: failover, kind: 'test', plan: 'plan-acme', request: JSON.stringify({ kind: 'test', plan: 'plan-acme', protections: ['web-acme'] }), startedAtMs: started, failureAtMs: started });
    state.db.prepare('INSERT INTO failover_locks (protection, failover, host, pid) VALUES (?, ?, ?, ?)').run('web-acme', failover, hostname(), dead);
    return dead;
  };

  it('a drill whose process died is torn down at the next start (its bubble too) and recorded as interrupted', async () => {
    const failover = 'fo-20261201T000000-dead';
    const dead = killedDrill('dr-test-dead', failover);
    // What the dead drill had made: its bubble network on the DR site.
    const dr = await sites.adapter('dr');
    const bubble = `vmdr-drill-${failover.slice(-6)}-acme`;
    await dr.ensureIsolatedNetwork({ name: bubble });
    assert.ok((await dr.listNetworks()).some((n) => n.name === bubble));

    const [recovered, ...more] = await recoverInterruptedDrills(deps);
    assert.equal(more.length, 0);
    assert.equal(recovered!.run.status, 'interrupted');
    assert.equal(recovered!.run.reason?.code, 'DRILL_INTERRUPTED');
    assert.match(recovered!.run.reason!.message, new RegExp(`^the process that ran it \\(pid ${dead}\\) ended before the drill did; torn down by fo-`));
    assert.ok(!(await dr.listNetworks()).some((n) => n.name === bubble), 'the bubble is gone');
    assert.equal(getFailover(state.db, failover)!.status, 'failed', 'the test failover is closed');
    assert.equal((state.db.prepare('SELECT COUNT(*) AS n FROM failover_locks').get() as { n: number }).n, 0, 'the plan is free again');
    const [told] = await hook.waitFor(1);
    assert.equal(told!.json.status, 'interrupted');
    assert.deepEqual(await recoverInterruptedDrills(deps), [], 'once');
  });

  it('a drill of a plan whose last drill\'s process died tears that one down first, then runs', async () => {
    killedDrill('dr-test-killed-cli', 'fo-20261201T000000-kcli');
    const { run } = await runDrill(deps, drill('monthly-acme'), 'manual');
    assert.notEqual(run.status, 'skipped', JSON.stringify(run.reason));
    assert.equal(run.status, 'failed', 'it ran (no recovery point on the test driver)');
    const killed = getDrillRun(state.db, 'dr-test-killed-cli')!;
    assert.equal(killed.status, 'interrupted');
    assert.match(killed.reason!.message, /torn down by fo-/);
    assert.equal(getFailover(state.db, 'fo-20261201T000000-kcli')!.status, 'failed');
  });
});
