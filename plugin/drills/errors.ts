import { VmdrError } from '../../hypervisors/errors.js';

/** A drill ran past its time limit: it was aborted and torn down. */
export class DrillTimedOut extends VmdrError {
  constructor(drill: string, limitMs: number) {
    super('DRILL_TIME_LIMIT', `drill "${drill}" ran past its time limit of ${limitMs / 1000} s: aborted and torn down`, {
      subject: { drill },
      remedy: 'raise the drill\'s timeLimit if its VMs need longer to become healthy',
    });
  }
}

/** The daemon (or the CLI) running a drill was stopped while it ran: torn down, not judged. */
export class DrillStopped extends VmdrError {
  constructor(drill: string) {
    super('DRILL_STOPPED', `drill "${drill}" was stopped before it ended (vmdr is shutting down): torn down`, { subject: { drill } });
  }
}

/** A drill was not started: its plan is held by another drill or failover. */
export class DrillSkipped extends VmdrError {
  constructor(drill: string, plan: string, why: string) {
    super('DRILL_PLAN_BUSY', `drill "${drill}" skipped: ${why}`, { subject: { drill, plan } });
  }
}

/** A drill ended without passing: what the CLI and the API report (the history holds the row). */
export class DrillNotPassed extends VmdrError {
  constructor(drill: string, run: string, status: string, reason: { code: string; message: string } | null) {
    super('DRILL_' + status.toUpperCase(), `drill "${drill}" ${status} (${run})${reason ? `: ${reason.message}` : ''}`, {
      subject: { drill, drillRun: run },
      userError: false,
    });
  }
}

/** A verdict's reason from what ended the drill: a VmdrError by its code; anything else as internal. */
export function reasonOf(err: unknown): { code: string; message: string } {
  return err instanceof VmdrError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}
