/**
 * What the watch does about a source seen down, beyond telling (policy.ts decides): the same
 * unplanned failover as `vmdr failover` (runner.ts: recorded, reported and resumable the same way),
 * of the protection or of its whole plan, fencing every source that answers before its target
 * boots. Each step the run makes is a watch event of its protections: failing-over when it starts
 * (confirm: prepared, waiting for `vmdr failover approve RUN`), fenced when a source was fenced
 * (failing-over again saying so when its site did not answer: that site fences it at its first
 * answer), failed-over when it is done, down again with the failure when it failed.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config } from '../config/schema.js';
import type { Approved } from '../failover/approval.js';
import type { StepEvent } from '../failover/journal.js';
import { APPROVAL_STEP, runFailover, type RunnerDeps } from '../failover/runner.js';
import { findProtection } from '../protections/find.js';
import { withdrawWaiting } from '../state/approvals.js';
import { lockHolder } from '../state/failovers.js';
import type { WatchState } from '../state/watch-events.js';
import { holdOf } from './hold.js';
import { actionOnDown } from './policy.js';
import type { Watched } from './watched.js';

export interface ActorDeps extends RunnerDeps {
  /** Records a state of one protection brought by the run (the watcher's machine follows it). */
  note: (protection: string, state: WatchState, detail: string) => void;
  onWarning?: (err: unknown) => void;
}

interface Run {
  id?: string;
  watch: 'automatic' | 'confirm';
  protections: string[];
  done: Promise<void>;
  /** Ends this run alone: a prepared failover withdrawn because its sources answer again. */
  stop: AbortController;
  approved?: boolean;
  /** Confirm: the run's protections whose sources answered since it was prepared. */
  answered: Set<string>;
  withdrawn?: boolean;
}

export class WatchActor {
  #runs = new Map<string, Run>();
  #stop = new AbortController();

  constructor(private readonly deps: ActorDeps) {}

  /**
   * A source of `w` just went down: starts what its policy says, and returns what to add to the
   * down event (what the watch does, or why it does nothing); undefined for notify.
   */
  onDown(w: Watched): string | undefined {
    const key = w.plan ? `plan ${w.plan}` : w.protection.name;
    const names = protectionsOf(this.deps, w);
    const db = this.deps.state.db;
    const mine = this.#runs.get(key);
    const holder = names.map((n) => lockHolder(db, n)).find((id) => id !== undefined);
    const busy = mine ? (mine.id ? `failover ${mine.id}` : 'a failover the watch started') : holder && `failover ${holder}`;
    const held = names.map((n) => ({ protection: n, hold: holdOf(this.deps.state, n) })).find((h) => h.hold);
    const action = actionOnDown(w.watch.policy, { ...(busy ? { busy } : {}), ...(held?.hold ? { held: { ...held.hold, protection: held.protection } } : {}) });
    if (action.act === 'none') return action.why;
    const run: Run = { watch: action.watch, protections: names, done: Promise.resolve(), stop: new AbortController(), answered: new Set() };
    run.done = this.#run(w, names, action.watch, run).finally(() => this.#runs.delete(key));
    this.#runs.set(key, run);
    const what = w.plan ? `plan ${w.plan}` : w.protection.name;
    return action.watch === 'automatic' ? `failing over ${what} automatically` : `a failover of ${what} is prepared: it waits for an approval`;
  }

  /**
   * Whether a failover the watch started holds `protection` now: its source is not beaten
   * meanwhile. A prepared failover still waiting for its approval does not: its sources are
   * beaten, and withdraw() takes it back once they all answer.
   */
  busy(protection: string): boolean {
    return [...this.#runs.values()].some((r) => r.protections.includes(protection) && !this.#waiting(r));
  }

  /** Whether `protection` is in a prepared failover that still waits for its approval. */
  waiting(protection: string): boolean {
    return [...this.#runs.values()].some((r) => r.protections.includes(protection) && this.#waiting(r));
  }

  /**
   * A source of a prepared failover answered (`ok`) or not: once every source of the run answers,
   * the failover nobody approved is withdrawn (its approval taken back, the run ended before it
   * changed anything), and its protections and what to say about them are returned. An approval
   * after that is refused.
   */
  sourceBeat(protection: string, ok: boolean): { protections: string[]; detail: string } | undefined {
    const run = [...this.#runs.values()].find((r) => r.protections.includes(protection) && this.#waiting(r));
    if (!run) return undefined;
    if (!ok) {
      run.answered.delete(protection);
      return undefined;
    }
    run.answered.add(protection);
    if (run.answered.size < run.protections.length || !run.id) return undefined;
    run.withdrawn = true;
    withdrawWaiting(this.deps.state.db, run.id);
    run.stop.abort();
    const detail = `the prepared failover ${run.id} is withdrawn: its source${run.protections.length > 1 ? 's answer' : ' answers'} again and nobody approved it`;
    return { protections: run.protections, detail };
  }

  #waiting(run: Run): boolean {
    return run.watch === 'confirm' && !run.approved && !run.withdrawn;
  }

  /** Ends the runs under way (a daemon stopping): a confirm stops waiting; a run stopped half way is continued with `vmdr failover --resume`. */
  async close(): Promise<void> {
    this.#stop.abort();
    await Promise.allSettled([...this.#runs.values()].map((r) => r.done));
  }

  async #run(w: Watched, names: string[], watch: 'automatic' | 'confirm', run: Run): Promise<void> {
    const all = (state: WatchState, detail: string) => {
      for (const n of names) this.deps.note(n, state, detail);
    };
    const onEvent = (e: StepEvent) => {
      if (!run.id) {
        run.id = e.failover;
        all(
          'failing-over',
          watch === 'automatic'
            ? `automatic failover ${e.failover} started`
            : `failover ${e.failover} prepared, waiting for an approval: \`vmdr failover approve ${e.failover}\` (or the API's POST /v1/failovers/${e.failover}/approve)`,
        );
      }
      if (e.step === APPROVAL_STEP && e.status === 'done') run.approved = true;
      if (e.step === APPROVAL_STEP && e.status === 'done') all('failing-over', `failover ${e.failover} approved by ${(e.detail as Approved).approvedBy ?? 'someone'}: failing over`);
      if (e.step === 'fence-source' && e.status === 'done') {
        const d = e.detail as { fenced: boolean; was?: string; why?: string };
        if (d.fenced) this.deps.note(e.protection, 'fenced', `source VM fenced by failover ${e.failover}${d.was ? ` (it was ${d.was})` : ''}`);
        else this.deps.note(e.protection, 'failing-over', `source could not be fenced (fenced: false): ${d.why ?? 'its site did not answer'}; its site fences it at its first answer`);
      }
    };
    const unit = w.plan ? { plan: w.plan } : { vm: w.protection.name };
    try {
      const signal = AbortSignal.any([this.#stop.signal, run.stop.signal]);
      const report = await runFailover(this.deps, { kind: 'unplanned', ...unit, watch, signal, onEvent });
      all('failed-over', `${watch} failover ${report.id} succeeded${report.rtoMs !== null ? ` (RTO ${(report.rtoMs / 1000).toFixed(1)} s)` : ''}`);
    } catch (err) {
      // Withdrawn: its sources answer again, which the watcher records.
      if (run.withdrawn) return;
      const why = err instanceof VmdrError ? `${err.code}: ${err.message}` : String(err);
      all('down', `${watch} failover${run.id ? ` ${run.id}` : ''} failed: ${why}`);
      this.deps.onWarning?.(err);
    }
  }
}

/** The protections a watch fails over together: its plan's, or its own. */
function protectionsOf(deps: { config: Config; file: string }, w: Watched): string[] {
  const plan = w.plan ? deps.config.plans.find((p) => p.name === w.plan) : undefined;
  return plan ? plan.groups.flatMap((g) => g.vms.map((v) => findProtection(deps.config, deps.file, v).name)) : [w.protection.name];
}
