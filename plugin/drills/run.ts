/**
 * One run of a configured drill: the test failover of its plan (the same run as `vmdr failover
 * --test --plan`), bounded by the drill's time limit, recorded in the drill history and told to
 * the webhooks. The runner tears the drill down however it ends (its cleanup step runs after an
 * abort too); the history says passed, failed (with why), skipped (its plan was busy) or
 * interrupted (vmdr stopped while it ran; or its process died: recover.ts).
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';
import type { Drill } from '../config/schema.js';
import type { StepEvent } from '../failover/journal.js';
import type { FailoverReport } from '../failover/report.js';
import { runFailover, type RunnerDeps } from '../failover/runner.js';
import { drillRunbookFile } from '../runbooks/load.js';
import { newRunId } from '../state/run-ids.js';
import { endDrillRun, insertDrillRun, runningDrillOfPlan, setDrillFailover, type DrillReason, type DrillRunRow, type DrillTrigger, type DrillVerdict } from '../state/drills.js';
import { DrillSkipped, DrillStopped, DrillTimedOut, reasonOf } from './errors.js';
import { tellDrillEnded, type DrillNotifier } from './notify.js';
import { recoverInterruptedDrills } from './recover.js';

export interface DrillDeps extends RunnerDeps {
  notifier?: DrillNotifier;
}

export interface DrillOptions {
  /** Aborts the drill (vmdr stops): it is torn down and recorded as interrupted. */
  signal?: AbortSignal;
  onEvent?: (event: StepEvent) => void;
  onProgress?: (progress: Progress) => void;
}

export interface DrillOutcome {
  run: DrillRunRow;
  /** The test failover's report; null when none was started (skipped). */
  report: FailoverReport | null;
}

/** The tenant a drill belongs to: its own, or its plan's. */
export function tenantOfDrill(deps: Pick<RunnerDeps, 'config'>, drill: Drill): string | undefined {
  return drill.tenant ?? deps.config.plans.find((p) => p.name === drill.plan)?.tenant;
}

export async function runDrill(deps: DrillDeps, drill: Drill, trigger: DrillTrigger, options: DrillOptions = {}): Promise<DrillOutcome> {
  const db = deps.state.db;
  const busy = runningDrillOfPlan(db, drill.plan);
  // A drill of this plan whose process died (a killed `vmdr drill run`) is torn down first, not
  // left to hold the plan until the daemon's next start.
  if (!busy) await recoverInterruptedDrills(deps, { plan: drill.plan });
  const now = Date.now();
  const id = newRunId('dr', now);
  insertDrillRun(db, { id, drill: drill.name, plan: drill.plan, tenant: tenantOfDrill(deps, drill) ?? null, trigger, startedAtMs: now });
  if (busy) {
    const why = new DrillSkipped(drill.name, drill.plan, `drill "${busy.drill}" of plan "${drill.plan}" (${busy.id}) still runs`);
    return finish(deps, endDrillRun(db, id, 'skipped', reasonOf(why)), null);
  }

  const limit = new AbortController();
  const timer = setTimeout(() => limit.abort(new DrillTimedOut(drill.name, drill.timeLimit)), drill.timeLimit);
  const signal = options.signal ? AbortSignal.any([options.signal, limit.signal]) : limit.signal;
  let failover: string | undefined;
  let report: FailoverReport | null = null;
  let verdict: DrillVerdict = 'passed';
  let reason: DrillReason | undefined;
  try {
    const runbook = drillRunbookFile(deps.config, deps.file, drill);
    report = await runFailover(deps, {
      kind: 'test',
      plan: drill.plan,
      // The drill's own runbook, else its plan's.
      ...(runbook ? { runbook } : {}),
      signal,
      onEvent: (e) => {
        if (failover === undefined) setDrillFailover(db, id, (failover = e.failover));
        options.onEvent?.(e);
      },
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  } catch (err) {
    report = (err as { report?: FailoverReport }).report ?? null;
    if (failover === undefined && err instanceof VmdrError && err.code === 'FAILOVER_IN_PROGRESS') {
      // Refused before it changed anything: another run (a failover, a drill of another host) holds the plan.
      verdict = 'skipped';
      reason = reasonOf(new DrillSkipped(drill.name, drill.plan, err.message));
    } else if (limit.signal.aborted) {
      verdict = 'failed';
      reason = reasonOf(limit.signal.reason);
    } else if (options.signal?.aborted) {
      verdict = 'interrupted';
      reason = reasonOf(new DrillStopped(drill.name));
    } else {
      verdict = 'failed';
      reason = reasonOf(err);
    }
  } finally {
    clearTimeout(timer);
  }
  return finish(deps, endDrillRun(db, id, verdict, reason), report);
}

function finish(deps: DrillDeps, run: DrillRunRow, report: FailoverReport | null): DrillOutcome {
  tellDrillEnded(deps.notifier, run);
  return { run, report };
}
