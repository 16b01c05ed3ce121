/**
 * What the webhooks hear of a drill that ended: `drill-failed` when it failed or was interrupted
 * (nothing was proven), `drill-passed` when it passed. A skip is only in the history.
 */
import type { NotificationEvent } from '../notifications/webhook.js';
import type { DrillReason, DrillRunRow, DrillVerdict } from '../state/drills.js';

/** Who tells the webhooks (the daemon's notifier): never waited for, never changes the verdict. */
export interface DrillNotifier {
  tell(subject: string, event: NotificationEvent): void;
}

export interface DrillNotification extends NotificationEvent {
  event: 'drill-failed' | 'drill-passed';
  drill: string;
  plan: string;
  tenant: string | null;
  drillRun: string;
  failover: string | null;
  status: DrillVerdict;
  reason: DrillReason | null;
}

export function tellDrillEnded(notifier: DrillNotifier | undefined, run: DrillRunRow): void {
  if (!notifier || run.status === 'skipped' || run.status === 'running') return;
  const event: DrillNotification = {
    event: run.status === 'passed' ? 'drill-passed' : 'drill-failed',
    at: new Date(run.endedAtMs ?? Date.now()).toISOString(),
    drill: run.drill,
    plan: run.plan,
    tenant: run.tenant,
    drillRun: run.id,
    failover: run.failover,
    status: run.status,
    reason: run.reason,
  };
  notifier.tell(`drill:${run.drill}`, event);
}
