/** What stops a runbook: a file that does not parse, a step that fails, an approval nobody waits for. */
import { VmdrError } from '../../hypervisors/errors.js';

/** The runbook file is missing, not YAML, or a step does not match its kind. */
export class RunbookInvalid extends VmdrError {
  constructor(file: string, problem: string, cause?: unknown) {
    super('RUNBOOK_INVALID', `${file}: ${problem}`, { subject: { file }, cause });
  }
}

/**
 * A step did what it could and the outcome was wrong (a script's exit status, an HTTP status, a
 * timeout). `detail` is what it produced (the script's output, the response), kept in the journal.
 */
export class RunbookStepFailed extends VmdrError {
  constructor(
    step: string,
    problem: string,
    readonly detail?: unknown,
    cause?: unknown,
  ) {
    super('RUNBOOK_STEP_FAILED', `runbook step "${step}": ${problem}`, { subject: { step }, cause });
  }
}

/** A step's own deadline passed: what it started was stopped (a script with its process group). */
export class RunbookStepTimedOut extends VmdrError {
  constructor(
    step: string,
    timeoutMs: number,
    readonly detail?: unknown,
  ) {
    super('RUNBOOK_STEP_TIMEOUT', `runbook step "${step}" did not end within ${timeoutMs / 1000} s and was stopped`, { subject: { step } });
  }
}

/** `vmdr runbook resume RUN` while no step of that run waits for an approval. */
export class NotWaitingForApproval extends VmdrError {
  constructor(failover: string) {
    super('NOT_WAITING_FOR_APPROVAL', `run ${failover} has no step waiting for an approval`, {
      subject: { failover },
      remedy: 'see the run with `vmdr status` or its report; an approval step must have started first',
    });
  }
}

/** A step whose onFailure is rollback failed: the run stops and undoes what it started. */
export class RunbookRollback extends VmdrError {
  constructor(step: string, cause: unknown) {
    super('RUNBOOK_ROLLBACK', `runbook step "${step}" failed, so the run is rolled back: ${cause instanceof Error ? cause.message : String(cause)}`, {
      subject: { step },
      cause,
    });
  }
}

/** A rollback's revert failed: said beside what caused the rollback, never instead of it. */
export class RunbookRollbackFailed extends VmdrError {
  constructor(failover: string, cause: unknown, revertError: unknown) {
    const why = (e: unknown) => (e instanceof Error ? e.message : String(e));
    super('RUNBOOK_ROLLBACK_FAILED', `${why(cause)}; rolling failover ${failover} back failed: ${why(revertError)}`, {
      subject: { failover },
      cause,
      remedy: `undo it with \`vmdr failover --plan PLAN --revert\` or per VM with \`vmdr failover VM --revert\``,
    });
  }
}
