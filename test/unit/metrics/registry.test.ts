import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { parseConfig } from '../../../plugin/config/load.js';
import type { Config } from '../../../plugin/config/schema.js';
import { VmdrMetrics } from '../../../plugin/metrics/registry.js';
import { metricsRoute } from '../../../plugin/metrics/route.js';
import { ReplicationLag } from '../../../plugin/replication/lag.js';
import { endFailover, endStep, insertFailover, reopenFailover, startStep } from '../../../plugin/state/failovers.js';
import { StateStore } from '../../../plugin/state/store.js';
import { recordSyncEnd, recordSyncStart } from '../../../plugin/state/sync-runs.js';
import { committedCycle, failedCycle } from '../../helpers/cycles.js';

const T0 = Date.parse('2026-12-01T10:00:00Z');

const CONFIG = `version: 1
sites:
  - name: src
    uri: test:///default
  - name: dr
    uri: test:///default
tenants:
  - name: acme
protections:
  - name: web
    tenant: acme
    rpo: 30s
    source: { site: src, vm: web }
    target: { site: dr, vm: web-dr, nics: [{ network: n }] }
  - name: db
    rpo: 5m
    source: { site: src, vm: db }
    target: { site: dr, vm: db-dr, nics: [{ network: n }] }
`;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, as a scraper reads it: one sample per line, comments aside. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { samples, types };
}

/** The value of the one sample of `name` whose labels include `labels`. */
function value(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(found.length <= 1, `more than one sample of ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

describe('metrics', () => {
  let root: string;
  let state: StateStore;
  let config: Config;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-metrics-'));
    state = StateStore.open(join(root, 'state', 'vmdr.db'));
    config = parseConfig(CONFIG, join(root, 'vmdr.yaml'));
  });
  afterEach(async () => {
    state.close();
    await rm(root, { recursive: true, force: true });
  });

  async function scrape(metrics: VmdrMetrics) {
    const app = Fastify();
    metricsRoute(app, metrics.registry);
    try {
      const res = await app.inject({ method: 'GET', url: '/metrics' });
      assert.equal(res.statusCode, 200);
      assert.match(res.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
      return parseExposition(res.body);
    } finally {
      await app.close();
    }
  }

  it('serves the cycles fed to it: bytes shipped, cycle durations, failures by code, lag and point age at scrape time, RPO', async () => {
    let clock = T0;
    const now = () => clock;
    const lag = new ReplicationLag(now);
    const metrics = new VmdrMetrics({ protections: config.protections, lag, state, now });
    const web = { protection: 'web', tenant: 'acme', site: 'src' };
    const db = { protection: 'db', tenant: '', site: 'src' };

    // Before any cycle: the counters are there at zero, no lag is made up.
    let { samples, types } = await scrape(metrics);
    assert.equal(value(samples, 'vmdr_replication_shipped_bytes_total', web), 0);
    assert.equal(value(samples, 'vmdr_rpo_breaches_total', db), 0);
    assert.equal(value(samples, 'vmdr_replication_lag_seconds', web), undefined);
    assert.equal(value(samples, 'vmdr_rpo_seconds', web), 30);
    assert.equal(value(samples, 'vmdr_rpo_seconds', db), 300);

    const feed = (c: Parameters<VmdrMetrics['cycle']>[0]) => {
      lag.observe(c);
      metrics.cycle(c);
    };
    feed(committedCycle('web', T0 - 2_000, { bytesShipped: 1_000_000, durationMs: 2_000 }));
    feed(committedCycle('web', T0 - 60, { bytesShipped: 4_096, durationMs: 60 }));
    feed(committedCycle('db', T0 - 1_500_000, { bytesShipped: 10 * 2 ** 30, durationMs: 1_500_000 }));
    feed(failedCycle('web', 'RECEIVER_UNREACHABLE'));
    feed(failedCycle('web', 'RECEIVER_UNREACHABLE'));
    feed(failedCycle('web', 'STREAM_CHECKSUM'));
    feed(failedCycle('db'));
    metrics.rpoBreached('web');
    clock = T0 + 45_000;

    ({ samples, types } = await scrape(metrics));
    assert.equal(value(samples, 'vmdr_replication_shipped_bytes_total', web), 1_004_096);
    assert.equal(value(samples, 'vmdr_replication_shipped_bytes_total', db), 10 * 2 ** 30);
    assert.equal(types.get('vmdr_replication_shipped_bytes_total'), 'counter');

    assert.equal(types.get('vmdr_replication_cycle_duration_seconds'), 'histogram');
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_count', web), 2);
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_sum', web), 2.06);
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_bucket', { ...web, le: '0.1' }), 1);
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_bucket', { ...web, le: '1' }), 1);
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_bucket', { ...web, le: '2.5' }), 2);
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_bucket', { ...db, le: '1800' }), 1);
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_bucket', { ...db, le: '600' }), 0);
    assert.equal(value(samples, 'vmdr_replication_cycle_duration_seconds_bucket', { ...db, le: '3600' }), 1);

    assert.equal(value(samples, 'vmdr_replication_cycle_failures_total', { ...web, code: 'RECEIVER_UNREACHABLE' }), 2);
    assert.equal(value(samples, 'vmdr_replication_cycle_failures_total', { ...web, code: 'STREAM_CHECKSUM' }), 1);
    assert.equal(value(samples, 'vmdr_replication_cycle_failures_total', { ...db, code: 'INTERNAL' }), 1);
    const failureLabels = new Set(samples.filter((s) => s.name === 'vmdr_replication_cycle_failures_total').flatMap((s) => Object.keys(s.labels)));
    assert.deepEqual([...failureLabels].sort(), ['code', 'protection', 'site', 'tenant'], 'codes only, no messages');

    // Measured at the scrape: 45 s after T0, the newest point of web is of T0 - 60 ms.
    assert.equal(value(samples, 'vmdr_replication_lag_seconds', web), 45.06);
    assert.equal(value(samples, 'vmdr_replication_lag_seconds', db), 1_545);
    // Committed when the daemon learnt of it (T0 on its clock).
    assert.equal(value(samples, 'vmdr_last_recovery_point_age_seconds', web), 45);
    assert.equal(value(samples, 'vmdr_rpo_breaches_total', web), 1);
    assert.equal(value(samples, 'vmdr_rpo_breaches_total', db), 0);

    // A later scrape sees a later lag without any cycle.
    clock = T0 + 100_000;
    ({ samples } = await scrape(metrics));
    assert.equal(value(samples, 'vmdr_replication_lag_seconds', web), 100.06);

    // The process's own metrics, on this registry.
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
      assert.ok(samples.some((s) => s.name === name), `${name} is served`);
    }
  });

  it("starts a protection's lag from this host's sync history when the daemon has had no cycle yet", async () => {
    const run = recordSyncStart(state, { protection: 'db', kind: 'incremental', checkpoint: 'vmdr-1', since: null });
    recordSyncEnd(state, run, { outcome: 'committed', point: 'rp-1' });
    const failed = recordSyncStart(state, { protection: 'db', kind: 'incremental', checkpoint: 'vmdr-2', since: 'vmdr-1' });
    recordSyncEnd(state, failed, { outcome: 'failed', error: { code: 'RECEIVER_UNREACHABLE', message: 'down' } });
    const started = Date.now();
    const lag = new ReplicationLag();
    lag.seed(state, ['web', 'db']);
    const { samples } = await scrape(new VmdrMetrics({ protections: config.protections, lag, state }));
    assert.equal(value(samples, 'vmdr_replication_lag_seconds', { protection: 'web' }), undefined);
    const seconds = value(samples, 'vmdr_replication_lag_seconds', { protection: 'db' })!;
    assert.ok(seconds >= 0 && seconds < (Date.now() - started) / 1000 + 1, `lag from the committed run: ${seconds}`);
  });

  it('counts each failover and drill result per protection once, by kind and result, from the state file', async () => {
    const lag = new ReplicationLag();
    const metrics = new VmdrMetrics({ protections: config.protections, lag, state });
    const db = state.db;
    const run = (id: string, kind: 'test' | 'unplanned', protections: string[], vms: Record<string, 'healthy' | 'failed' | 'not reached'>, status: 'succeeded' | 'failed') => {
      insertFailover(db, { id, kind, plan: null, request: JSON.stringify({ kind, protections }), startedAtMs: T0, failureAtMs: T0 });
      for (const [p, outcome] of Object.entries(vms)) {
        if (outcome === 'not reached') continue;
        startStep(db, id, p, 'boot');
        endStep(db, id, p, 'boot', 'done');
        startStep(db, id, p, 'health');
        if (outcome === 'healthy') endStep(db, id, p, 'health', 'done', { detail: { healthyAt: new Date(T0).toISOString(), guest: 'test' } });
        else endStep(db, id, p, 'health', 'failed', { error: { code: 'HEALTH_TIMEOUT', message: 'no ready line' } });
      }
      endFailover(db, id, status, status === 'failed' ? { code: 'FAILOVER_STEP_FAILED', message: 'a VM failed' } : undefined);
    };
    run('fo-test-1', 'test', ['web', 'db'], { web: 'healthy', db: 'healthy' }, 'succeeded');
    run('fo-test-2', 'test', ['web', 'db'], { web: 'failed', db: 'not reached' }, 'failed');
    run('fo-test-3', 'unplanned', ['web'], { web: 'healthy' }, 'succeeded');
    // Still running: not counted yet.
    insertFailover(db, { id: 'fo-test-4', kind: 'test', plan: null, request: JSON.stringify({ kind: 'test', protections: ['db'] }), startedAtMs: T0, failureAtMs: T0 });

    const count = (samples: Sample[], labels: Record<string, string>) => value(samples, 'vmdr_failovers_total', labels);
    let { samples } = await scrape(metrics);
    assert.equal(count(samples, { protection: 'web', tenant: 'acme', site: 'src', kind: 'test', result: 'succeeded' }), 1);
    assert.equal(count(samples, { protection: 'web', kind: 'test', result: 'failed' }), 1);
    assert.equal(count(samples, { protection: 'db', tenant: '', kind: 'test', result: 'succeeded' }), 1);
    assert.equal(count(samples, { protection: 'db', kind: 'test', result: 'failed' }), 1, 'a VM the failed run never reached failed with it');
    assert.equal(count(samples, { protection: 'web', kind: 'unplanned', result: 'succeeded' }), 1);
    assert.equal(samples.filter((s) => s.name === 'vmdr_failovers_total').length, 5);

    // A second scrape counts nothing twice; the running drill ends; the failed one is resumed to success.
    endFailover(db, 'fo-test-4', 'succeeded');
    startStep(db, 'fo-test-4', 'db', 'health');
    endStep(db, 'fo-test-4', 'db', 'health', 'done', { detail: { healthyAt: new Date(T0).toISOString() } });
    ({ samples } = await scrape(metrics));
    assert.equal(count(samples, { protection: 'db', kind: 'test', result: 'succeeded' }), 2);
    await new Promise((r) => setTimeout(r, 5));
    reopenFailover(db, 'fo-test-2');
    startStep(db, 'fo-test-2', 'web', 'health');
    endStep(db, 'fo-test-2', 'web', 'health', 'done', { detail: { healthyAt: new Date(T0).toISOString() } });
    startStep(db, 'fo-test-2', 'db', 'health');
    endStep(db, 'fo-test-2', 'db', 'health', 'done', { detail: { healthyAt: new Date(T0).toISOString() } });
    endFailover(db, 'fo-test-2', 'succeeded');
    ({ samples } = await scrape(metrics));
    assert.equal(count(samples, { protection: 'web', kind: 'test', result: 'succeeded' }), 2);
    assert.equal(count(samples, { protection: 'web', kind: 'test', result: 'failed' }), 1, 'a counter never goes down');
    assert.equal(count(samples, { protection: 'db', kind: 'test', result: 'succeeded' }), 3);
  });
});
