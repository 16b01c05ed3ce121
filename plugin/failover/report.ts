/**
 * The timeline report of a failover, built from its journal alone (so a resumed or reverted run
 * reports the same way): each step's start and end, each VM's point and health, the RTO (start
 * of the run to its last VM healthy) and the data-loss window (the point's time against the
 * moment of failure; for a planned failover, against the moment the source stopped).
 */
import { getFailover, listSteps, type FailoverKind, type StepRow } from '../state/failovers.js';
import type { StateStore } from '../state/store.js';
import type { AppliedIdentity } from '../targets/identity.js';
import type { HealthStep } from './boot.js';
import type { VmEvidence } from './evidence.js';
import { RUN, RUNBOOK_STEP } from './journal.js';
import type { ChosenPoint } from './recovery-point.js';

/** A run's stored report files (plugin/reports/store.ts writes them). */
export interface ReportFiles {
  json: string;
  html: string;
}

/** Where a run's report went, or why it could not be stored (the run's result stands either way). */
export type StoredReportFiles = ReportFiles | { error: { code: string; message: string } };

export interface StepReport {
  step: string;
  status: StepRow['status'];
  startedAt: string;
  endedAt: string | null;
  durationMs: number | null;
  error?: { code: string; message: string };
  /** A runbook step's outcome (a script's exit and output, an HTTP status), done or failed. */
  runbook?: unknown;
}

/** One failback pass (reverse-sync while the DR VM runs, final-delta after it stopped). */
export interface PassReport {
  step: string;
  bytesCompared: number;
  /** Bytes of the blocks that differed (older runs recorded no such figure: null). */
  bytesDiffering: number | null;
  /** Bytes sent to the source site on the wire (older runs: the bytes copied). */
  bytesSent: number;
}

export interface VmReport {
  protection: string;
  targetVm: string;
  /** The VM that came up: the target for a failover, the source VM for a failback. */
  vm: string;
  group: string;
  status: 'healthy' | 'failed' | 'skipped' | 'reverted' | 'pending';
  point: { id: string; time: string } | null;
  dataLossWindowMs: number | null;
  /** Whether the data-loss window is within the plan's rpo; null when the plan sets none. */
  dataLossWindowMet: boolean | null;
  healthyAt: string | null;
  guest: string | null;
  /**
   * What the identity step did: found the identity provisioning gave the VM in place, or wrote it
   * (a drill's VM; a target whose config changed since, or provisioned before vmdr did it then).
   * Null before the step (or from a run older than this field).
   */
  identity: AppliedIdentity['action'] | null;
  /** Why the source could not be fenced (its site does not answer); null when it was, or did not need to be. */
  sourceNotFenced: string | null;
  steps: StepReport[];
  /** What a drill kept of the VM (evidence.ts); null for other kinds, or before the step. */
  evidence: VmEvidence | null;
  /** A failback's copy passes, in order, with what they compared and sent. */
  passes?: PassReport[];
}

/** A plan's objectives (config `rto:` and `rpo:`), in milliseconds; null where it sets none. */
export interface ReportTargets {
  rtoMs: number | null;
  rpoMs: number | null;
}

export interface FailoverReport {
  id: string;
  kind: FailoverKind;
  plan: string | null;
  status: 'running' | 'succeeded' | 'failed';
  startedAt: string;
  endedAt: string | null;
  failureAt: string;
  /** Start of the run to its last VM healthy; null when none became healthy. */
  rtoMs: number | null;
  /** The plan's objectives; null for a run of one VM (no plan) and for a revert (nothing comes up). */
  targets: ReportTargets | null;
  /** Whether the RTO is within the plan's rto; null when there is none. A run with no VM healthy missed it. */
  rtoMet: boolean | null;
  groups: { name: string; status: StepRow['status'] | 'pending'; startedAt: string | null; endedAt: string | null }[];
  run: StepReport[];
  vms: VmReport[];
  error?: { code: string; message: string };
  /** Where the run's signed report files were stored when it ended, or why they could not be (never signed itself). */
  stored?: StoredReportFiles;
}

export function buildReport(
  state: StateStore,
  id: string,
  groups: { name: string; protections: { name: string; targetVm: string; sourceVm: string }[] }[],
  objectives?: { rto?: number | undefined; rpo?: number | undefined },
): FailoverReport {
  const row = getFailover(state.db, id)!;
  const steps = listSteps(state.db, id);
  const targets: ReportTargets | null = objectives && row.kind !== 'revert' ? { rtoMs: objectives.rto ?? null, rpoMs: objectives.rpo ?? null } : null;
  const within = (target: number | null | undefined, measured: number | null) => (target == null ? null : measured !== null && measured <= target);
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  const stepsOf = (protection: string) => steps.filter((s) => s.protection === protection);
  const detail = <T>(protection: string, step: string): T | undefined => {
    const s = steps.find((x) => x.protection === protection && x.step === step && x.status === 'done');
    return s?.detail ? (JSON.parse(s.detail) as T) : undefined;
  };
  const toStep = (s: StepRow): StepReport => ({
    step: s.step,
    status: s.status,
    startedAt: iso(s.startedAtMs)!,
    endedAt: iso(s.endedAtMs),
    durationMs: s.endedAtMs === null ? null : s.endedAtMs - s.startedAtMs,
    ...(s.errorCode ? { error: { code: s.errorCode, message: s.errorMessage ?? '' } } : {}),
    ...(s.step.startsWith(RUNBOOK_STEP) && s.detail ? { runbook: JSON.parse(s.detail) as unknown } : {}),
  });

  const vms: VmReport[] = groups.flatMap((g) =>
    g.protections.map((p) => {
      const own = stepsOf(p.name);
      const point = detail<ChosenPoint>(p.name, 'choose-point');
      const health = detail<HealthStep>(p.name, 'health');
      const identity = detail<Partial<AppliedIdentity>>(p.name, 'identity');
      const stopped = detail<{ sourceStoppedAt: string }>(p.name, 'stop-source');
      const fence = detail<{ fenced?: boolean; why?: string }>(p.name, 'fence-source');
      // Planned: the source stopped, then the final point was taken: whatever it wrote is in it,
      // so nothing is lost (the stop is on the source site's clock, the point on this one's).
      const final = detail<{ point: string }>(p.name, 'final-sync');
      const lossFrom = stopped ? Date.parse(stopped.sourceStoppedAt) : row.failureAtMs;
      const status: VmReport['status'] = own.some((s) => s.step === 'skipped')
        ? 'skipped'
        : own.some((s) => s.status === 'failed')
          ? 'failed'
          : row.kind === 'revert' && own.length > 0 && own.every((s) => s.status === 'done')
            ? 'reverted'
            : health
              ? 'healthy'
              : 'pending';
      const dataLossWindowMs = !point ? null : stopped && final?.point === point.id ? 0 : Math.max(0, lossFrom - Date.parse(point.time));
      return {
        protection: p.name,
        targetVm: p.targetVm,
        vm: row.kind === 'failback' ? p.sourceVm : p.targetVm,
        group: g.name,
        status,
        point: point ? { id: point.id, time: point.time } : null,
        dataLossWindowMs,
        dataLossWindowMet: status === 'skipped' ? null : within(targets?.rpoMs, dataLossWindowMs),
        healthyAt: health?.healthyAt ?? null,
        guest: health?.guest ?? null,
        identity: identity?.action ?? null,
        sourceNotFenced: fence?.fenced === false ? (fence.why ?? 'the source could not be fenced') : null,
        steps: own.map(toStep),
        evidence: detail<VmEvidence>(p.name, 'evidence') ?? null,
        ...(row.kind === 'failback' ? { passes: passesOf(own) } : {}),
      };
    }),
  );
  const healthy = vms.map((v) => (v.healthyAt ? Date.parse(v.healthyAt) : NaN)).filter((t) => !Number.isNaN(t));
  const rtoMs = healthy.length ? Math.max(...healthy) - row.startedAtMs : null;
  return {
    id,
    kind: row.kind,
    plan: row.plan,
    status: row.status,
    startedAt: iso(row.startedAtMs)!,
    endedAt: iso(row.endedAtMs),
    failureAt: iso(row.failureAtMs)!,
    rtoMs,
    targets,
    rtoMet: within(targets?.rtoMs, rtoMs),
    groups: groups.map((g) => {
      const s = steps.find((x) => x.protection === RUN && x.step === `group ${g.name}`);
      return { name: g.name, status: s?.status ?? 'pending', startedAt: iso(s?.startedAtMs ?? null), endedAt: iso(s?.endedAtMs ?? null) };
    }),
    run: stepsOf(RUN).map(toStep),
    vms,
    ...(row.errorCode ? { error: { code: row.errorCode, message: row.errorMessage ?? '' } } : {}),
  };
}

const PASSES = ['reverse-sync', 'final-delta'];

function passesOf(steps: StepRow[]): PassReport[] {
  return steps.flatMap((s) => {
    if (!PASSES.includes(s.step) || s.status !== 'done' || !s.detail) return [];
    const d = JSON.parse(s.detail) as { bytesCompared?: number; bytesDiffering?: number; bytesSent?: number; bytesCopied?: number };
    if (d.bytesCompared === undefined) return []; // a pass skipped (the DR VM was not running)
    return [{ step: s.step, bytesCompared: d.bytesCompared, bytesDiffering: d.bytesDiffering ?? null, bytesSent: d.bytesSent ?? d.bytesCopied ?? 0 }];
  });
}
