/**
 * What a runbook would do, step by step, with the VMs, URLs and scripts it would touch: read from
 * the config and the runbook alone, so it needs no hypervisor and changes nothing.
 */
import type { Config, Plan } from '../config/schema.js';
import { findProtection } from '../protections/find.js';
import { DEFAULT_TIMEOUT_MS } from './execute.js';
import { configFacts, type VmFacts } from './facts.js';
import type { Runbook, RunbookStep } from './schema.js';
import { fillTemplate } from './template.js';

/** Stands for the run's id, which a dry run does not have. */
export const DRY_RUN_ID = '<run id>';

export interface DryRunContext {
  config: Config;
  file: string;
  plan: Plan;
  kind: string;
}

export function describeRunbook(runbook: Runbook, d: DryRunContext): string[] {
  const lines = [`runbook ${runbook.file}: ${d.kind} failover of plan "${d.plan.name}" (dry run: nothing is done)`];
  runbook.steps.forEach((step, i) => lines.push(...describeStep(step, `${i + 1}.`, '', d)));
  return lines;
}

function describeStep(step: RunbookStep, number: string, indent: string, d: DryRunContext): string[] {
  const policy = [
    step.timeout !== undefined || step.kind === 'script' || step.kind === 'http' ? `timeout ${seconds(step.timeout ?? DEFAULT_TIMEOUT_MS[step.kind as 'script' | 'http'])}` : undefined,
    `on failure ${step.onFailure}`,
  ]
    .filter(Boolean)
    .join(', ');
  const head = `${indent}${number} ${step.kind} "${step.name}" (${policy})`;
  const more = `${indent}     `;
  switch (step.kind) {
    case 'start':
      return [`${head}: boots group "${step.group}", each VM then health-checked:`, ...vms(step.group, d).map((v) => `${more}${describeVm(v)}`)];
    case 'wait-health':
      return [`${head}: waits until group "${step.group}" passes its health checks:`, ...vms(step.group, d).map((v) => `${more}${v.vm}`)];
    case 'script': {
      const command = [step.script.path, ...step.script.args].map((a) => (/^[\w./=:@-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
      if (!step.for) return [`${head}: runs ${command}`];
      return [`${head}: runs ${command} once per VM of group "${step.for}":`, ...vms(step.for, d).map((v) => `${more}${describeVm(v)}`)];
    }
    case 'http': {
      const body = step.http.body === undefined ? '' : ` with body ${JSON.stringify(fillTemplate(step.http.body, { 'run.id': DRY_RUN_ID, 'run.kind': d.kind, plan: d.plan.name }))}`;
      return [`${head}: ${step.http.method} ${step.http.url}${body}, expects ${step.http.expect?.status ?? '2xx'}`];
    }
    case 'approval':
      return [`${head}: waits for \`vmdr runbook resume ${DRY_RUN_ID}\`: ${JSON.stringify(step.message)}`];
    case 'parallel':
      return [`${head}: runs at once:`, ...step.steps.flatMap((s, i) => describeStep(s, `${number}${i + 1}.`, `${indent}   `, d))];
  }
}

function vms(group: string, d: DryRunContext): VmFacts[] {
  const g = d.plan.groups.find((x) => x.name === group)!;
  return g.vms.map((name) => {
    const p = findProtection(d.config, d.file, name);
    return configFacts(p, group, d.kind === 'test' ? `${p.target.vm}-drill-<run>` : p.target.vm);
  });
}

function describeVm(v: VmFacts): string {
  const facts = [`hostname ${v.hostname}`, v.addresses.length ? `IPs ${v.addresses.join(' ')}` : undefined, v.macs.length ? `MACs ${v.macs.join(' ')}` : undefined];
  return `${v.protection}: ${v.vm} (${facts.filter(Boolean).join(', ')})`;
}

function seconds(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : `${ms / 1000}s`;
}
