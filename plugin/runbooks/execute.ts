/**
 * Runs a runbook's steps in order, each one a step of the failover's journal (`runbook NAME`, and
 * `runbook NAME` of each VM for a script run per VM), so a killed run resumed with --resume goes
 * on after the last step that ended; a step that was running is run again. Each step has its own
 * deadline and failure policy: stop (the run stops), continue (recorded as failed, the next step
 * runs; a resumed run does not repeat it), rollback (the run stops and undoes what it started).
 */
import { VmdrError } from '../../hypervisors/errors.js';
import { FailoverStepFailed } from '../failover/errors.js';
import { RUN, RUNBOOK_STEP, type FailoverJournal } from '../failover/journal.js';
import { waitForApproval } from '../failover/approval.js';
import { RunbookRollback, RunbookStepTimedOut } from './errors.js';
import { runEnv, vmEnv, type RunFacts, type VmFacts } from './facts.js';
import { callHttp } from './http.js';
import type { Runbook, RunbookStep } from './schema.js';
import { runScript } from './script.js';

/** What only the failover runner can do: the steps that touch VMs. */
export interface RunbookActions {
  /** Boots the group's VMs with their health checks, as a plan without a runbook does. */
  startGroup(group: string, signal: AbortSignal | undefined): Promise<unknown>;
  /** Waits until the group's VMs pass their health checks (again). */
  waitHealth(group: string, signal: AbortSignal | undefined): Promise<unknown>;
  vmsOf(group: string): Promise<VmFacts[]>;
}

export interface RunbookRun {
  journal: FailoverJournal;
  run: RunFacts;
  actions: RunbookActions;
  signal?: AbortSignal;
}

export const DEFAULT_TIMEOUT_MS = { script: 600_000, http: 30_000 } as const;
export function journalStep(step: RunbookStep): string {
  return `${RUNBOOK_STEP}${step.name}`;
}

export async function executeRunbook(runbook: Runbook, r: RunbookRun): Promise<void> {
  for (const step of runbook.steps) await runStep(step, r);
}

/** One step under its policy: resolves when the run goes on, throws when it stops. */
async function runStep(step: RunbookStep, r: RunbookRun): Promise<void> {
  const key = journalStep(step);
  const earlier = r.journal.steps().find((s) => s.protection === RUN && s.step === key);
  if (earlier?.status === 'failed' && step.onFailure === 'continue') return;
  try {
    await r.journal.step(RUN, key, () => work(step, r));
  } catch (err) {
    const inner = err instanceof FailoverStepFailed ? err.cause : err;
    // A step of a parallel block that rolls back rolls the run back, whatever the block's policy.
    if (r.signal?.aborted) throw err;
    if (inner instanceof VmdrError && inner.code === 'RUNBOOK_ROLLBACK') throw inner;
    if (step.onFailure === 'continue') return;
    if (step.onFailure === 'rollback') throw new RunbookRollback(step.name, inner);
    throw err;
  }
}

async function work(step: RunbookStep, r: RunbookRun): Promise<unknown> {
  const deadline = step.timeout === undefined ? undefined : AbortSignal.timeout(step.timeout);
  const signal = deadline && r.signal ? AbortSignal.any([r.signal, deadline]) : (deadline ?? r.signal);
  const timedOut = (err: unknown) => {
    if (deadline?.aborted && !(err instanceof RunbookStepTimedOut)) throw new RunbookStepTimedOut(step.name, step.timeout!);
    throw err;
  };
  switch (step.kind) {
    case 'start':
      return r.actions.startGroup(step.group, signal).catch(timedOut);
    case 'wait-health':
      return r.actions.waitHealth(step.group, signal).catch(timedOut);
    case 'script':
      return scriptStep(step, r);
    case 'http':
      return callHttp(step.name, step.http, { 'run.id': r.run.id, 'run.kind': r.run.kind, plan: r.run.plan }, step.timeout ?? DEFAULT_TIMEOUT_MS.http, r.signal);
    case 'approval':
      return waitForApproval(r.journal, step.name, journalStep(step), step.message, `approve with \`vmdr runbook resume ${r.run.id}\``, signal).catch(timedOut);
    case 'parallel':
      return parallelStep(step, r);
  }
}

async function scriptStep(step: Extract<RunbookStep, { kind: 'script' }>, r: RunbookRun): Promise<unknown> {
  const timeout = step.timeout ?? DEFAULT_TIMEOUT_MS.script;
  const env = runEnv(r.run, step.name);
  if (!step.for) return runScript(step.name, step.script, env, timeout, r.signal);
  // Once per VM of the group, one after the other; each VM's run is its own journal step.
  const vms = await r.actions.vmsOf(step.for);
  const outcomes = [];
  for (const vm of vms) {
    outcomes.push(await r.journal.step(vm.protection, journalStep(step), async () => ({ vm: vm.vm, ...(await runScript(step.name, step.script, { ...env, ...vmEnv(vm) }, timeout, r.signal)) })));
  }
  return { vms: outcomes.map((o) => ({ vm: o.vm, exitCode: o.exitCode })) };
}

async function parallelStep(step: Extract<RunbookStep, { kind: 'parallel' }>, r: RunbookRun): Promise<unknown> {
  const results = await Promise.allSettled(step.steps.map((s) => runStep(s, r)));
  const failed = results.filter((x): x is PromiseRejectedResult => x.status === 'rejected').map((x) => x.reason as unknown);
  const rollback = failed.find((e) => e instanceof VmdrError && e.code === 'RUNBOOK_ROLLBACK');
  if (rollback) throw rollback;
  if (failed.length) throw failed[0];
  return { steps: step.steps.map((s) => s.name) };
}
