/** A failover as a person reads it: steps as they happen, then the timeline and its figures. */
import { RUNBOOK_STEP, type StepEvent } from '../../plugin/failover/journal.js';
import type { VmEvidence } from '../../plugin/failover/evidence.js';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { formatBytes } from './progress.js';

const seconds = (ms: number | null) => (ms === null ? '-' : `${(ms / 1000).toFixed(1)} s`);

/** One line per step as it starts or ends, timed from the run's start. */
export function stepPrinter(write: (line: string) => void): (event: StepEvent) => void {
  const started = Date.now();
  const begun = new Map<string, number>();
  return (e) => {
    const key = `${e.protection}/${e.step}`;
    const at = `+${((e.at.getTime() - started) / 1000).toFixed(1)}s`.padStart(8);
    const who = (e.protection || 'run').padEnd(16);
    if (e.status === 'started') {
      begun.set(key, e.at.getTime());
      return;
    }
    if (e.status === 'waiting') return write(`${at}  ${who}  ${e.step.padEnd(18)} waiting: ${String(e.detail)}`);
    const took = begun.has(key) ? ` (${seconds(e.at.getTime() - begun.get(key)!)})` : '';
    const why = e.error ? `: ${e.error.message}` : '';
    write(`${at}  ${who}  ${e.step.padEnd(18)} ${e.status}${took}${why}`);
  };
}

export function describeFailover(r: FailoverReport): string {
  const t0 = Date.parse(r.startedAt);
  const rel = (iso: string | null) => (iso ? `+${((Date.parse(iso) - t0) / 1000).toFixed(1)} s` : '-');
  const lines = [
    `failover ${r.id} (${r.kind}${r.plan ? `, plan ${r.plan}` : ''}): ${r.status}` +
      (r.endedAt ? ` in ${seconds(Date.parse(r.endedAt) - t0)}` : '') +
      (r.rtoMs !== null ? `; RTO ${seconds(r.rtoMs)}` : '') +
      (r.rtoMet === null || r.rtoMet === undefined ? '' : r.rtoMet ? ` (within the plan's rto of ${seconds(r.targets!.rtoMs)})` : ` (MISSED the plan's rto of ${seconds(r.targets!.rtoMs)})`),
  ];
  for (const g of r.groups) {
    if (r.groups.length > 1 || r.plan) lines.push(`  group ${g.name}: ${g.status} ${rel(g.startedAt)} -> ${rel(g.endedAt)}`);
    for (const vm of r.vms.filter((v) => v.group === g.name)) {
      const point = vm.point ? `${vm.point.id} of ${vm.point.time}` : 'no point';
      const met = vm.dataLossWindowMet === null || vm.dataLossWindowMet === undefined ? '' : vm.dataLossWindowMet ? ' within the rpo' : ' over the rpo';
      const loss = vm.dataLossWindowMs !== null ? `, data-loss window ${seconds(vm.dataLossWindowMs)}${met}` : '';
      lines.push(`    ${vm.protection} -> ${vm.vm}${r.kind === 'failback' ? ' (the source VM)' : ''}: ${vm.status}${vm.healthyAt ? ` at ${rel(vm.healthyAt)}` : ''} (${point}${loss})`);
      if (vm.guest) lines.push(`      guest: ${vm.guest}`);
      if (vm.evidence) lines.push(`      evidence: ${describeEvidence(vm.evidence)}`);
      for (const pass of vm.passes ?? []) {
        const differed = pass.bytesDiffering === null ? '' : `, ${formatBytes(pass.bytesDiffering)} differed`;
        lines.push(`      ${pass.step}: compared ${formatBytes(pass.bytesCompared)}${differed}, ${formatBytes(pass.bytesSent)} sent to the source`);
      }
      if (vm.sourceNotFenced) lines.push(`      warning: the source could not be fenced: ${vm.sourceNotFenced}`);
      for (const s of vm.steps) {
        lines.push(`      ${s.step.padEnd(18)} ${s.status.padEnd(8)} ${rel(s.startedAt).padStart(9)}  ${seconds(s.durationMs).padStart(7)}${s.error ? `  ${s.error.message}` : ''}`);
        const outcome = runbookOutcome(s.runbook);
        if (outcome) lines.push(`        ${outcome}`);
      }
    }
  }
  const runbook = r.run.filter((s) => s.step.startsWith(RUNBOOK_STEP));
  if (runbook.length) lines.push('  runbook:');
  for (const s of runbook) {
    const outcome = runbookOutcome(s.runbook);
    lines.push(`    ${s.step.slice(RUNBOOK_STEP.length).padEnd(18)} ${s.status.padEnd(8)} ${rel(s.startedAt).padStart(9)}  ${seconds(s.durationMs).padStart(7)}${outcome ? `  ${outcome}` : ''}`);
  }
  if (r.error) lines.push(`  stopped: ${r.error.message}`);
  return lines.join('\n');
}

/** A runbook step's outcome in a few words: a script's exit and last line, an HTTP status, who approved. */
function runbookOutcome(detail: unknown): string | undefined {
  if (typeof detail !== 'object' || detail === null) return undefined;
  const d = detail as { exitCode?: number | null; signal?: string | null; stdout?: string; stderr?: string; status?: number; url?: string; approvedBy?: string };
  if ('exitCode' in d) {
    const last = (d.stdout?.trim() || d.stderr?.trim() || '').split('\n').pop();
    return `${d.signal ? `killed by ${d.signal}` : `exit ${d.exitCode}`}${last ? `: ${last.slice(0, 120)}` : ''}`;
  }
  if (d.status !== undefined) return `HTTP ${d.status} from ${d.url}`;
  if (d.approvedBy !== undefined) return `approved by ${d.approvedBy}`;
  return undefined;
}

/** One line: where the screenshot is (or why there is none), the checks, the console, the point's age. */
function describeEvidence(e: VmEvidence): string {
  const shot = !e.screenshot ? 'no screenshot' : 'missing' in e.screenshot ? `no screenshot (${e.screenshot.missing})` : `screenshot ${e.screenshot.file} (${e.screenshot.width}x${e.screenshot.height})`;
  const passed = e.checks.filter((c) => c.passed).length;
  const age = e.point ? `, point ${seconds(e.point.ageMs)} old at boot` : '';
  return `${shot}; ${passed}/${e.checks.length} checks passed; ${e.console.length} console lines${age}`;
}
