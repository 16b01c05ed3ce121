/**
 * The daemon's Prometheus metrics, on a registry of its own (not prom-client's global one, which
 * any dependency may write into). Every per-protection series carries `protection`, `tenant` (empty
 * when it has none) and `site` (the protection's source site, where its replication loop runs):
 * their number is bounded by the config. Failures are labelled by error code, never by message.
 *
 * Fed by the places that know, through the calls below, which `vmdr serve` wires to the replication
 * loops' cycle reports and the RPO monitor's events; lags are measured at scrape time and failover
 * results read from the state file then, so a scrape always sees the present.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import type { CycleReport } from '../replication/continuous.js';
import type { ReplicationLag } from '../replication/lag.js';
import type { SyncResult } from '../replication/sync.js';
import type { StateStore } from '../state/store.js';
import { FailoverResults } from './failover-results.js';

const LABELS = ['protection', 'tenant', 'site'] as const;
type Label = (typeof LABELS)[number];

/** From a tenth of a second (a small incremental on loopback) to an hour (a full sync over a WAN). */
export const CYCLE_DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

export interface MetricsDeps {
  /** The protections replicated here: their lag, RPO and cycle series. */
  protections: readonly Protection[];
  /** Every protection of the config, for the labels of failovers run here (default: `protections`). */
  known?: readonly Protection[];
  lag: ReplicationLag;
  /** Where failovers and drills are journalled; without it, no failover results. */
  state?: StateStore;
  /** The clock lags are measured with (tests pass their own). */
  now?: () => number;
}

export class VmdrMetrics {
  readonly registry = new Registry();
  readonly #labels: (protection: string) => Record<Label, string>;
  readonly #shipped: Counter<Label>;
  readonly #duration: Histogram<Label>;
  readonly #failures: Counter<Label | 'code'>;
  readonly #breaches: Counter<Label>;

  #protections: readonly Protection[] = [];
  #byName = new Map<string, Protection>();
  readonly #rpo: Gauge<Label>;

  constructor(deps: MetricsDeps) {
    this.#labels = (protection) => {
      const p = this.#byName.get(protection);
      // A protection gone from the config may still have failovers in the state file.
      return { protection, tenant: p?.tenant ?? '', site: p?.source.site ?? '' };
    };
    const registers = [this.registry];
    const labels = this.#labels;
    const now = deps.now ?? Date.now;
    const { lag } = deps;
    const protectionsNow = () => this.#protections;

    /** A gauge of one of the lag's figures, read from the lag at scrape time; absent before a protection's first point. */
    const lagGauge = (name: string, help: string, figure: 'lagSeconds' | 'pointAgeSeconds') =>
      new Gauge({
        name,
        help,
        labelNames: LABELS,
        registers,
        collect() {
          this.reset();
          const at = now();
          for (const p of protectionsNow()) {
            const l = lag.lag(p.name, at);
            if (l) this.set(labels(p.name), l[figure]);
          }
        },
      });
    lagGauge(
      'vmdr_replication_lag_seconds',
      "Seconds from the instant of the protection's newest recovery point to now: what a failover now would lose. Absent before its first point.",
      'lagSeconds',
    );
    lagGauge('vmdr_last_recovery_point_age_seconds', 'Seconds since the newest recovery point was committed: how long replication has made no progress.', 'pointAgeSeconds');
    this.#rpo = new Gauge({ name: 'vmdr_rpo_seconds', help: "The protection's recovery point objective.", labelNames: LABELS, registers });

    this.#shipped = new Counter({ name: 'vmdr_replication_shipped_bytes_total', help: 'Bytes of delta streams sent to the DR site (after compression, with framing).', labelNames: LABELS, registers });
    this.#duration = new Histogram({
      name: 'vmdr_replication_cycle_duration_seconds',
      help: 'How long committed sync cycles took, start to commit.',
      labelNames: LABELS,
      buckets: CYCLE_DURATION_BUCKETS,
      registers,
    });
    this.#failures = new Counter({ name: 'vmdr_replication_cycle_failures_total', help: 'Sync cycles that failed, by error code.', labelNames: [...LABELS, 'code'], registers });
    this.#breaches = new Counter({ name: 'vmdr_rpo_breaches_total', help: "Times the protection's lag passed its RPO (one per breach, however long it lasts).", labelNames: LABELS, registers });
    this.setProtections(deps.protections, deps.known);

    const results = deps.state && new FailoverResults(deps.state);
    new Counter({
      name: 'vmdr_failovers_total',
      help: 'Failover results per protection, by kind (test: a drill) and result (succeeded, failed, skipped).',
      labelNames: [...LABELS, 'kind', 'result'],
      registers,
      collect() {
        for (const o of results?.take() ?? []) this.inc({ ...labels(o.protection), kind: o.kind, result: o.result });
      },
    });

    collectDefaultMetrics({ register: this.registry });
  }

  /**
   * The protections replicated here (and every one of the config, for labels) from now on: at
   * start, and when the daemon reloads its config. Series of a protection no longer replicated
   * here stop being reported; its counters keep what they counted.
   */
  setProtections(protections: readonly Protection[], known: readonly Protection[] = protections): void {
    const before = new Set(this.#protections.map((p) => p.name));
    this.#protections = protections;
    this.#byName = new Map(known.map((p) => [p.name, p]));
    this.#rpo.reset();
    for (const p of protections) {
      this.#rpo.set(this.#labels(p.name), p.rpo / 1000);
      if (before.has(p.name)) continue;
      // Zero from the start, so a rate() over the first breach or byte sees it.
      this.#shipped.inc(this.#labels(p.name), 0);
      this.#breaches.inc(this.#labels(p.name), 0);
    }
  }

  /** A replication loop's cycle report (plugin/replication/continuous.ts onCycle). */
  cycle(report: CycleReport): void {
    if (report.result) this.synced(report.result);
    else if (report.error !== undefined) {
      const code = report.error instanceof VmdrError ? report.error.code : 'INTERNAL';
      this.#failures.inc({ ...this.#labels(report.protection), code });
    }
  }

  /** A committed sync: a loop's, or one `vmdr sync` handed over to the daemon. */
  synced(result: SyncResult): void {
    const labels = this.#labels(result.protection);
    this.#shipped.inc(labels, result.bytesShipped);
    this.#duration.observe(labels, result.durationMs / 1000);
  }

  /** The RPO monitor saw the protection's lag pass its RPO. */
  rpoBreached(protection: string): void {
    this.#breaches.inc(this.#labels(protection));
  }
}
