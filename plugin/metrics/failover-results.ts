/**
 * The result of every failover (drills are failovers of kind `test`) per protection, from the
 * state file's journal: runs started by the CLI on this host count as well as the daemon's own, and
 * a restart of the daemon loses none. Each ending of a run counts once: a failed run resumed to
 * success counts one `failed` and later one `succeeded`, as a counter must (it never goes down).
 *
 * A protection's result is its VM's in the run's report: healthy (or reverted) is `succeeded`,
 * skipped by the plan is `skipped`, failed is `failed`, and one the run never reached is the run's.
 */
import type { FailoverRequest } from '../failover/context.js';
import { buildReport, type VmReport } from '../failover/report.js';
import type { FailoverKind } from '../state/failovers.js';
import type { StateStore } from '../state/store.js';

export type FailoverResult = 'succeeded' | 'failed' | 'skipped';

export interface FailoverOutcome {
  protection: string;
  kind: FailoverKind;
  result: FailoverResult;
}

export class FailoverResults {
  /** Endings counted already: run id and when it ended. */
  readonly #seen = new Set<string>();

  constructor(private readonly state: StateStore) {}

  /** The outcomes of runs that ended since the last call (every ended run, at the first). */
  take(): FailoverOutcome[] {
    const ended = this.state.db
      .prepare(`SELECT id, status, request, ended_at_ms AS endedAtMs FROM failovers WHERE status != 'running' AND ended_at_ms IS NOT NULL`)
      .all() as { id: string; status: 'succeeded' | 'failed'; request: string; endedAtMs: number }[];
    const outcomes: FailoverOutcome[] = [];
    for (const run of ended) {
      const key = `${run.id}@${run.endedAtMs}:${run.status}`;
      if (this.#seen.has(key)) continue;
      this.#seen.add(key);
      const { protections } = JSON.parse(run.request) as FailoverRequest;
      // The report reads VM states from the journal; the VMs' names are not needed for that.
      const report = buildReport(this.state, run.id, [{ name: 'run', protections: protections.map((name) => ({ name, targetVm: '', sourceVm: '' })) }]);
      for (const vm of report.vms) outcomes.push({ protection: vm.protection, kind: report.kind, result: resultOf(vm.status, run.status) });
    }
    return outcomes;
  }
}

function resultOf(status: VmReport['status'], run: 'succeeded' | 'failed'): FailoverResult {
  switch (status) {
    case 'healthy':
    case 'reverted':
      return 'succeeded';
    case 'skipped':
    case 'failed':
      return status;
    case 'pending':
      return run;
  }
}
