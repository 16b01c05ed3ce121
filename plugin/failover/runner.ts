/**
 * The failover runner: one VM or a plan's priority groups, in order. A group's VMs start in
 * parallel up to the group's bound; the next group starts only when every VM of this one is
 * healthy (or skipped, when the plan says so). Before anything changes, every VM of the run passes
 * its preflight. The run is a persisted state machine (journal.ts): killed at any point, it is
 * continued with `resume`, and no two runs ever hold the same protection.
 */
import type { Config, Plan, Protection } from '../config/schema.js';
import { NotInConfig } from '../config/errors.js';
import { findProtection } from '../protections/find.js';
import type { SiteConnections } from '../sites/connections.js';
import { endFailover, getFailover, insertFailover, reopenFailover, tryLockProtections, unfinishedFailover, unlockProtections, type FailoverRow } from '../state/failovers.js';
import { roleOf } from '../state/roles.js';
import { newRunId } from '../state/run-ids.js';
import type { StateStore } from '../state/store.js';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';
import type { PreparedVm } from './boot.js';
import { drAdapter, type FailoverRequest, type RunContext } from './context.js';
import { bubbleName, prepareDrill, removeDrill } from './drill.js';
import { FailoverInProgress, FailoverStepFailed, NotFailedOver, NothingToResume } from './errors.js';
import { FailoverJournal, RUN, RUNBOOK_STEP, type StepEvent } from './journal.js';
import { preflight, type Preflight } from './preflight.js';
import { buildReport, type FailoverReport } from './report.js';
import { revertVm } from './revert.js';
import { prepareTakeOver } from './take-over.js';
import { storeRunReport } from '../reports/store.js';
import { prepareFailBack, failbackPreflight, type FailbackPreflight } from './failback.js';
import { RunbookInvalid, RunbookRollbackFailed } from '../runbooks/errors.js';
import { executeRunbook } from '../runbooks/execute.js';
import { checkAgainstPlan, loadRunbook, runbookFile } from '../runbooks/load.js';
import type { Runbook } from '../runbooks/schema.js';
import { runbookActions } from './runbook-actions.js';
import { waitForApproval } from './approval.js';

/** The step (and approval) a failover the watch prepared waits at (policy confirm). */
export const APPROVAL_STEP = 'approval';

export interface RunnerDeps {
  config: Config;
  file: string;
  sites: SiteConnections;
  state: StateStore;
}

export interface FailoverOptions {
  kind: 'unplanned' | 'planned' | 'test' | 'revert' | 'failback';
  /** A protection or source VM name; or `plan`. */
  vm?: string;
  plan?: string;
  point?: string;
  at?: Date;
  force?: boolean;
  shutdownTimeoutMs?: number;
  resume?: boolean;
  /**
   * A runbook file run instead of starting the plan's groups in order; default the plan's own
   * (`runbook:` in the config). Needs a plan.
   */
  runbook?: string;
  /** Started by the watch on a source seen down (FailoverRequest.watch); implies force. */
  watch?: 'automatic' | 'confirm';
  signal?: AbortSignal;
  onEvent?: (event: StepEvent) => void;
  /** Each step begun and over, and the bytes of the copies inside steps (failback). */
  onProgress?: (progress: Progress) => void;
}

interface Group {
  name: string;
  protections: Protection[];
  parallel: number;
}

export async function runFailover(deps: RunnerDeps, options: FailoverOptions): Promise<FailoverReport> {
  const { plan, groups } = resolveGroups(deps, options);
  const protections = groups.flatMap((g) => g.protections.map((p) => p.name));
  let row: FailoverRow;
  let runbook: Runbook | undefined;
  if (options.resume) {
    row = resumable(deps, plan, protections);
    runbook = await runbookOf(deps, plan, (JSON.parse(row.request) as FailoverRequest).runbook);
    lockOrRefuse(deps, row.id, protections, row.id);
    reopenFailover(deps.state.db, row.id);
  } else {
    const originals = options.kind === 'revert' ? originalRuns(deps, protections) : undefined;
    // Checked before anything is recorded: a runbook that does not load changes nothing.
    runbook = await runbookOf(deps, plan, options.runbook ?? planRunbook(deps, plan, options.kind));
    const request: FailoverRequest = {
      kind: options.kind,
      ...(runbook ? { runbook: runbook.file } : {}),
      ...(originals ? { originals } : {}),
      ...(plan ? { plan: plan.name } : {}),
      protections,
      ...(options.point ? { point: options.point } : {}),
      ...(options.at ? { at: options.at.toISOString() } : {}),
      ...(options.force || options.watch ? { force: true } : {}),
      ...(options.watch ? { watch: options.watch } : {}),
      ...(options.shutdownTimeoutMs !== undefined ? { shutdownTimeoutMs: options.shutdownTimeoutMs } : {}),
    };
    const now = Date.now();
    const id = newRunId('fo', now);
    insertFailover(deps.state.db, { id, kind: options.kind, plan: plan?.name ?? null, request: JSON.stringify(request), startedAtMs: now, failureAtMs: now });
    if (originals) releaseOriginals(deps, originals);
    lockOrRefuse(deps, id, protections);
    row = getFailover(deps.state.db, id)!;
  }

  const request = JSON.parse(row.request) as FailoverRequest;
  const journal = new FailoverJournal(deps.state, row.id, options.onEvent, options.onProgress);
  const ctx: RunContext = { ...deps, id: row.id, journal, request, failureAt: new Date(row.failureAtMs), signal: options.signal, onProgress: options.onProgress };
  let failure: unknown;
  try {
    if (request.kind === 'revert') await revertAll(ctx, groups);
    else await runGroups(ctx, groups, plan, runbook);
  } catch (err) {
    // A preflight changes nothing: its own error says it best.
    failure = err instanceof FailoverStepFailed && err.subject.protection === 'run' && err.subject.step === 'preflight' ? err.cause : err;
  } finally {
    if (request.kind === 'test') await cleanUpDrill(ctx, groups).catch((err: unknown) => (failure ??= err));
  }
  const error = failure === undefined ? undefined : failure instanceof VmdrError ? { code: failure.code, message: failure.message } : { code: 'INTERNAL', message: String(failure) };
  endFailover(deps.state.db, row.id, error ? 'failed' : 'succeeded', error);
  // A real failover that failed after it changed something keeps its protections: only --resume
  // or --revert may touch them then.
  const changedSomething = journal.steps().some((s) => s.protection !== RUN);
  if (!error || request.kind === 'test' || request.kind === 'revert' || !changedSomething) unlockProtections(deps.state.db, row.id);
  const report = buildReport(deps.state, row.id, reportGroups(groups), plan);
  // Signed, beside the state file; one that cannot be stored says why, and the run's result stands.
  report.stored = await storeRunReport(deps.config, report);
  if (failure !== undefined) {
    // A test run was torn down by its cleanup already; a real one is reverted VM by VM.
    if (isRollback(failure) && request.kind !== 'test') {
      try {
        await rollBack(deps, options, journal);
      } catch (err) {
        throw Object.assign(new RunbookRollbackFailed(row.id, failure, err), { report });
      }
    }
    throw Object.assign(failure as object, { report });
  }
  return report;
}

function isRollback(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof VmdrError && e.code === 'RUNBOOK_ROLLBACK') return true;
  return false;
}

/** Undoes what a real run started: a revert of each protection it touched, one after the other. */
async function rollBack(deps: RunnerDeps, options: FailoverOptions, journal: FailoverJournal): Promise<void> {
  const touched = [...new Set(journal.steps().filter((s) => s.protection !== RUN && !s.step.startsWith(RUNBOOK_STEP)).map((s) => s.protection))];
  const { signal, onEvent, onProgress } = options;
  for (const vm of touched) await runFailover(deps, { kind: 'revert', vm, ...(signal ? { signal } : {}), ...(onEvent ? { onEvent } : {}), ...(onProgress ? { onProgress } : {}) });
}

/** The runbook a plan runs by default: its own, for the kinds a runbook drives (not revert, not failback). */
function planRunbook(deps: RunnerDeps, plan: Plan | undefined, kind: FailoverOptions['kind']): string | undefined {
  if (!plan?.runbook || kind === 'revert' || kind === 'failback') return undefined;
  return runbookFile(deps.config, deps.file, plan.runbook);
}

async function runbookOf(deps: RunnerDeps, plan: Plan | undefined, file: string | undefined): Promise<Runbook | undefined> {
  if (file === undefined) return undefined;
  if (!plan) throw new RunbookInvalid(file, 'a runbook runs with a plan (--plan): its steps start the plan\'s groups');
  const runbook = await loadRunbook(file);
  checkAgainstPlan(runbook, plan);
  return runbook;
}

function reportGroups(groups: Group[]) {
  return groups.map((g) => ({ name: g.name, protections: g.protections.map((p) => ({ name: p.name, targetVm: p.target.vm, sourceVm: p.source.vm })) }));
}

/**
 * The report of a run from the state file (its timeline so far, while it runs): grouped as its
 * plan is now, or one group per protection it named. Protections the config no longer has are
 * reported under their names.
 */
export function storedReport(deps: Pick<RunnerDeps, 'config' | 'state'>, id: string): FailoverReport | undefined {
  const row = getFailover(deps.state.db, id);
  if (!row) return undefined;
  const request = JSON.parse(row.request) as FailoverRequest;
  const plan = request.plan ? deps.config.plans.find((x) => x.name === request.plan) : undefined;
  const known = (name: string) => {
    const p = deps.config.protections.find((x) => x.name === name);
    return { name, targetVm: p?.target.vm ?? name, sourceVm: p?.source.vm ?? name };
  };
  const groups = plan
    ? plan.groups.map((g) => ({ name: g.name, protections: g.vms.map(known) }))
    : request.protections.map((name) => ({ name, protections: [known(name)] }));
  return buildReport(deps.state, id, groups, plan);
}

/** The protections a stored run is about. */
export function protectionsOfRun(row: FailoverRow): string[] {
  return (JSON.parse(row.request) as FailoverRequest).protections;
}

function resolveGroups(deps: RunnerDeps, options: FailoverOptions): { plan?: Plan; groups: Group[] } {
  if (options.plan) {
    const plan = deps.config.plans.find((x) => x.name === options.plan);
    if (!plan) throw new NotInConfig('plan', options.plan, deps.file);
    const groups = plan.groups.map((g) => ({ name: g.name, parallel: g.parallel, protections: g.vms.map((v) => findProtection(deps.config, deps.file, v)) }));
    return { plan, groups };
  }
  const p = findProtection(deps.config, deps.file, options.vm ?? '');
  return { groups: [{ name: p.name, parallel: 1, protections: [p] }] };
}

function resumable(deps: RunnerDeps, plan: Plan | undefined, protections: string[]): FailoverRow {
  const row = plan ? unfinishedFailover(deps.state.db, { plan: plan.name }) : unfinishedFailover(deps.state.db, { protection: protections[0]! });
  if (!row || row.status === 'succeeded') throw new NothingToResume(plan ? `plan "${plan.name}"` : `"${protections[0]}"`);
  return row;
}

function lockOrRefuse(deps: RunnerDeps, id: string, protections: string[], resuming?: string): void {
  const lock = tryLockProtections(deps.state.db, id, protections);
  if (lock.locked) return;
  if (!resuming) deps.state.db.prepare('DELETE FROM failovers WHERE id = ?').run(id);
  throw new FailoverInProgress(lock.heldBy.protection, lock.heldBy.failover, lock.live);
}

/** A revert takes the protections over from the run it undoes, unless that run is alive. */
/**
 * The run each protection of a revert undoes: the failover it is failed over by, or the real
 * failover that stopped half way and still holds it. One that is still running is left alone.
 */
function originalRuns(deps: RunnerDeps, protections: string[]): Record<string, string> {
  const originals: Record<string, string> = {};
  for (const name of protections) {
    const id = roleOf(deps.state.db, name).failover ?? unfinishedFailover(deps.state.db, { protection: name })?.id;
    if (!id) throw new NotFailedOver(name, 'revert');
    const probe = tryLockProtections(deps.state.db, id, [name]);
    if (!probe.locked && probe.live) throw new FailoverInProgress(name, probe.heldBy.failover, true);
    originals[name] = id;
  }
  return originals;
}

/** The reverted runs let go of their protections and can no longer be resumed. */
function releaseOriginals(deps: RunnerDeps, originals: Record<string, string>): void {
  for (const id of new Set(Object.values(originals))) {
    unlockProtections(deps.state.db, id);
    const original = getFailover(deps.state.db, id);
    if (original?.status === 'running') endFailover(deps.state.db, id, 'failed', { code: 'REVERTED', message: 'undone by a revert' });
  }
}

async function runGroups(ctx: RunContext, groups: Group[], plan: Plan | undefined, runbook: Runbook | undefined): Promise<void> {
  const j = ctx.journal;
  const all = groups.flatMap((g) => g.protections);
  // The first group's starts are announced before the preflight, so the adapters' set-up for them
  // overlaps it; each later group's when it begins (startGroup).
  await expectStarts(ctx, groups.slice(0, 1));
  const checked = await j.step(RUN, 'preflight', async () => {
    const check = (p: Protection) => (ctx.request.kind === 'failback' ? failbackPreflight(ctx, p) : preflight(ctx, p));
    const results = await Promise.all(all.map(async (p) => [p.name, await check(p)] as const));
    return Object.fromEntries(results) as Record<string, Preflight & FailbackPreflight>;
  });
  // Prepared (checked, nothing changed yet) for the watch's confirm policy: a person says go.
  if (ctx.request.watch === 'confirm') {
    const what = plan ? `plan "${plan.name}"` : `"${all[0]!.name}"`;
    await j.step(RUN, APPROVAL_STEP, () =>
      waitForApproval(j, APPROVAL_STEP, APPROVAL_STEP, `the watch saw the source of ${what} down: fail it over`, `approve with \`vmdr failover approve ${ctx.id}\``, ctx.signal),
    );
  }
  const start = (group: Group, signal: AbortSignal | undefined) => {
    // Aborted (a drill's time limit, the daemon stopping): no further group starts; the caller's
    // clean-up (a drill's) still runs.
    signal?.throwIfAborted();
    return startGroup({ ...ctx, signal }, group, plan, checked);
  };
  if (!runbook) {
    for (const group of groups) await start(group, ctx.signal);
    return;
  }
  const run = { id: ctx.id, kind: ctx.request.kind, plan: plan?.name ?? '' };
  await executeRunbook(runbook, { journal: j, run, actions: runbookActions(ctx, groups, start), ...(ctx.signal ? { signal: ctx.signal } : {}) });
}

/** Tells each DR site's adapter how many of its VMs the largest of `groups` starts at once. */
async function expectStarts(ctx: RunContext, groups: Group[]): Promise<void> {
  const most = new Map<string, number>();
  for (const g of groups) {
    const perSite = new Map<string, number>();
    // A failback starts the source VMs, every other run the targets.
    const siteOf = (p: Protection) => (ctx.request.kind === 'failback' ? p.source.site : p.target.site);
    for (const p of g.protections) perSite.set(siteOf(p), (perSite.get(siteOf(p)) ?? 0) + 1);
    for (const [site, n] of perSite) most.set(site, Math.max(most.get(site) ?? 0, Math.min(n, g.parallel)));
  }
  // Only a hint: a site that cannot be reached now says so in the preflight, with its own error.
  await Promise.all([...most].map(async ([site, n]) => (await ctx.sites.adapter(site).catch(() => undefined))?.expectParallel?.(n)));
}

/**
 * A group's VMs brought up, at most `parallel` at once; recorded as the run's step `group NAME`.
 * Every VM of the group is prepared (disks, identity) before any starts: the starts go out together
 * and no VM's preparation competes with guests already booting for the host's CPU. A group one of
 * whose VMs cannot be prepared starts none of them.
 */
function startGroup(ctx: RunContext, group: Group, plan: Plan | undefined, checked: Record<string, Preflight & FailbackPreflight>) {
  const j = ctx.journal;
  return j.step(RUN, `group ${group.name}`, async () => {
    // While its VMs are prepared: what the adapters need for this group's starts.
    const expected = expectStarts(ctx, [group]);
    const prepare = (p: Protection): Promise<PreparedVm> => {
      if (ctx.request.kind === 'test') return prepareDrill(ctx, p);
      if (ctx.request.kind === 'failback') return prepareFailBack(ctx, p, checked[p.name]!);
      return prepareTakeOver(ctx, p, checked[p.name]!);
    };
    const prepared = new Map<string, PreparedVm>();
    await inParallel(group.protections, group.parallel, async (p) => void prepared.set(p.name, await prepare(p)));
    await expected;
    const skipped: string[] = [];
    await inParallel(group.protections, group.parallel, async (p) => {
      try {
        await prepared.get(p.name)!.boot();
      } catch (err) {
        const unhealthy = err instanceof VmdrError && err.subject.step === 'health';
        if (!(unhealthy && plan?.onHealthFailure === 'skip')) throw err;
        j.skip(p.name, 'skipped', `health check failed; the plan skips unhealthy VMs: ${(err as Error).message}`);
        skipped.push(p.name);
      }
    });
    return { vms: group.protections.map((p) => p.name), skipped };
  });
}

/** Reverts newest group first: web servers go down before the database they use. */
async function revertAll(ctx: RunContext, groups: Group[]): Promise<void> {
  for (const group of [...groups].reverse()) {
    await ctx.journal.step(RUN, `group ${group.name}`, async () => {
      await revertGroup(ctx, group);
      return { vms: group.protections.map((p) => p.name) };
    });
  }
}

async function revertGroup(ctx: RunContext, group: Group): Promise<void> {
  await inParallel(group.protections, group.parallel, async (p) => {
    const originalId = ctx.request.originals?.[p.name];
    if (!originalId) throw new NotFailedOver(p.name, 'revert');
    const original = getFailover(ctx.state.db, originalId)!;
    const originalJournal = new FailoverJournal(ctx.state, originalId);
    if (original.kind === 'test') {
      const originalCtx = { ...ctx, id: originalId, journal: originalJournal };
      await removeDrill(originalCtx, p);
      await removeBubbles(originalCtx, [p]);
    } else {
      await revertVm(ctx, p, originalJournal);
    }
  });
}

async function cleanUpDrill(ctx: RunContext, groups: Group[]): Promise<void> {
  const all = groups.flatMap((g) => g.protections);
  await ctx.journal.step(RUN, 'cleanup', async () => {
    const results = await Promise.allSettled(all.map((p) => removeDrill(ctx, p)));
    await removeBubbles(ctx, all);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return {};
  });
}

async function removeBubbles(ctx: RunContext, protections: Protection[]): Promise<void> {
  const seen = new Set<string>();
  for (const p of protections) {
    const name = bubbleName(ctx, p.tenant);
    // A plan's VMs may drill on several DR sites: each has its own bubble of that name.
    const key = `${p.target.site}\0${name}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const dr = await drAdapter(ctx, p);
    await dr.removeNetwork(name).catch((err: unknown) => {
      if (!(err instanceof VmdrError && err.code === 'NETWORK_NOT_FOUND')) throw err;
    });
  }
}

/** Runs `work` on every item, at most `bound` at once; waits for all, then throws the first failure. */
async function inParallel<T>(items: T[], bound: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  let first: unknown;
  let failed = false;
  const worker = async () => {
    for (let item = queue.shift(); item !== undefined && !failed; item = queue.shift()) {
      try {
        await work(item);
      } catch (err) {
        if (!failed) first = err;
        failed = true;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(bound, items.length) }, worker));
  if (failed) throw first;
}
