/**
 * The runner's memory: each step of a failover is written to the state file before it starts and
 * after it ends, with what it produced. A step that is already done is not run again; its recorded
 * result is returned instead. That is what makes `vmdr failover --resume` continue a run killed
 * half way, and what the timeline report is built from. Steps must therefore be safe to repeat
 * when they were started but not recorded as done.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';
import { failpoint } from '../replication/replica/failpoints.js';
import { doneStep, endStep, listSteps, startStep, type StepRow } from '../state/failovers.js';
import type { StateStore } from '../state/store.js';
import { FailoverStepFailed } from './errors.js';

/** The protection a step of the whole run (not of one VM) is recorded under. */
export const RUN = '';

/** How a runbook's steps are named in the journal: `runbook NAME`. */
export const RUNBOOK_STEP = 'runbook ';

export interface StepEvent {
  failover: string;
  protection: string;
  step: string;
  /** waiting: a started step waits for a person (a runbook's approval); `detail` says for what. */
  status: 'started' | 'done' | 'failed' | 'skipped' | 'resumed' | 'waiting';
  at: Date;
  detail?: unknown;
  error?: { code: string; message: string };
}

export class FailoverJournal {
  constructor(
    readonly state: StateStore,
    readonly failover: string,
    private readonly onEvent?: (event: StepEvent) => void,
    private readonly onProgress?: (progress: Progress) => void,
  ) {}

  steps(): StepRow[] {
    return listSteps(this.state.db, this.failover);
  }

  done(protection: string, step: string): StepRow | undefined {
    return doneStep(this.state.db, this.failover, protection, step);
  }

  /** The recorded result of a finished step, or undefined when it has not finished. */
  result<T>(protection: string, step: string): T | undefined {
    const row = this.done(protection, step);
    return row?.detail ? (JSON.parse(row.detail) as T) : undefined;
  }

  /**
   * Runs `work` as step `step` of `protection`, unless it is already done. The result must be
   * plain JSON (it is stored). A failure is recorded and rethrown as FailoverStepFailed.
   */
  async step<T>(protection: string, step: string, work: () => Promise<T>): Promise<T> {
    const row = this.done(protection, step);
    if (row) {
      this.emit({ protection, step, status: 'resumed' });
      return (row.detail ? JSON.parse(row.detail) : undefined) as T;
    }
    startStep(this.state.db, this.failover, protection, step);
    this.emit({ protection, step, status: 'started' });
    failpoint(`failover-before-${step}`);
    let result: T;
    try {
      result = await work();
    } catch (err) {
      const error = err instanceof VmdrError ? { code: err.code, message: err.message } : { code: 'INTERNAL', message: (err as Error).message };
      // What a failed step produced (a runbook script's output) is kept beside its error.
      const detail = (err as { detail?: unknown } | null)?.detail;
      endStep(this.state.db, this.failover, protection, step, 'failed', { error, ...(detail !== undefined ? { detail } : {}) });
      this.emit({ protection, step, status: 'failed', error });
      throw err instanceof FailoverStepFailed ? err : new FailoverStepFailed(this.failover, protection || 'run', step, err);
    }
    endStep(this.state.db, this.failover, protection, step, 'done', { detail: result ?? null });
    this.emit({ protection, step, status: 'done', detail: result });
    failpoint(`failover-after-${step}`);
    return result;
  }

  skip(protection: string, step: string, reason: string): void {
    startStep(this.state.db, this.failover, protection, step);
    endStep(this.state.db, this.failover, protection, step, 'skipped', { detail: { reason } });
    this.emit({ protection, step, status: 'skipped', detail: { reason } });
  }

  /** Tells whoever watches that a started step waits for a person, and how to let it go on. */
  waiting(protection: string, step: string, detail: string): void {
    this.emit({ protection, step, status: 'waiting', detail });
  }

  private emit(event: Omit<StepEvent, 'failover' | 'at'>): void {
    this.onEvent?.({ failover: this.failover, at: new Date(), ...event });
    this.onProgress?.(stepProgress(this.failover, event));
  }
}

/** A step as progress: one step of one VM (or of the run), begun (0 of 1) or over (1 of 1). */
function stepProgress(failover: string, e: Omit<StepEvent, 'failover' | 'at'>): Progress {
  const over = e.status === 'done' || e.status === 'skipped' || e.status === 'resumed';
  return {
    phase: e.step,
    unit: 'steps',
    done: over ? 1 : 0,
    total: 1,
    subject: { failover, ...(e.protection === RUN ? {} : { protection: e.protection }) },
    detail: e.error ? `${e.status}: ${e.error.message}` : e.status === 'waiting' ? `waiting: ${String(e.detail)}` : e.status,
  };
}
