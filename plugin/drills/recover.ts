/**
 * Drills whose process died (vmdr serve killed mid-drill, a host crash): at the next start their
 * test failover is reverted, which removes whatever the drill had made (its VMs, boot overlays,
 * seeds, bubble networks) and unpins its points, and the history records them as interrupted.
 */
import { runFailover } from '../failover/runner.js';
import { getFailover, unfinishedFailover } from '../state/failovers.js';
import { endDrillRun, interruptedDrillRuns, type DrillRunRow } from '../state/drills.js';
import type { RunnerDeps } from '../failover/runner.js';
import { reasonOf } from './errors.js';
import { tellDrillEnded, type DrillNotifier } from './notify.js';

export interface RecoveredDrill {
  run: DrillRunRow;
  /** The revert that tore it down, when it had anything to tear down. */
  revert: string | null;
}

/** Every interrupted drill of this host (at the daemon's start), or those of one plan (before a drill of it). */
export async function recoverInterruptedDrills(deps: RunnerDeps & { notifier?: DrillNotifier }, only: { plan?: string } = {}): Promise<RecoveredDrill[]> {
  const recovered: RecoveredDrill[] = [];
  for (const run of interruptedDrillRuns(deps.state.db).filter((r) => only.plan === undefined || r.plan === only.plan)) {
    // Killed between the runner's first row and its first step, the drill row has no failover yet.
    const held = unfinishedFailover(deps.state.db, { plan: run.plan });
    const failover = run.failover ?? (held && held.kind === 'test' && held.startedAtMs >= run.startedAtMs ? held.id : null);
    let message = `the process that ran it (pid ${run.pid}) ended before the drill did`;
    let revert: string | null = null;
    if (failover && held?.id === failover) {
      try {
        const report = await runFailover(deps, { kind: 'revert', plan: run.plan });
        revert = report.id;
        message += `; torn down by ${report.id}`;
      } catch (err) {
        const why = reasonOf(err);
        revert = (err as { report?: { id: string } }).report?.id ?? null;
        message += `; tearing it down failed (${why.code}: ${why.message}); "vmdr failover --revert --plan ${run.plan}" retries`;
      }
    } else if (failover && getFailover(deps.state.db, failover)?.status === 'running') {
      message += `; its test failover ${failover} holds nothing any more`;
    }
    const ended = endDrillRun(deps.state.db, run.id, 'interrupted', { code: 'DRILL_INTERRUPTED', message });
    tellDrillEnded(deps.notifier, ended);
    recovered.push({ run: ended, revert });
  }
  return recovered;
}
