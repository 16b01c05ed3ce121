/**
 * Reads a runbook file and checks every step, each error in one line naming the file, the step
 * (its index and name) and the field: `web.yaml: steps[2] "notify-dns": field "url": an http:// or
 * https:// URL`. A plan's runbook is checked again against that plan: the groups it starts,
 * waits for, or runs scripts for must be the plan's own.
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import type { Config, Drill, Plan } from '../config/schema.js';
import { NotInConfig } from '../config/errors.js';
import { RunbookInvalid } from './errors.js';
import { KIND_SCHEMAS, RunbookFileSchema, STEP_KINDS, type Runbook, type RunbookStep, type StepKind } from './schema.js';

/** A runbook is a page of steps; anything larger is a mistake (a binary, a log). */
const MAX_RUNBOOK_BYTES = 1024 * 1024;
const COMMON_KEYS = ['name', 'timeout', 'onFailure', 'for'];

export async function loadRunbook(file: string): Promise<Runbook> {
  let text: string;
  try {
    const bytes = await readFile(file);
    if (bytes.length > MAX_RUNBOOK_BYTES) throw new RunbookInvalid(file, `larger than ${MAX_RUNBOOK_BYTES / 1024} KiB: a runbook is a page of steps`);
    text = bytes.toString('utf8');
  } catch (err) {
    if (err instanceof RunbookInvalid) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new RunbookInvalid(file, code === 'ENOENT' ? 'no such file' : `cannot be read (${code ?? (err as Error).message})`, err);
  }
  return parseRunbook(text, file);
}

export function parseRunbook(text: string, file: string): Runbook {
  const doc = parseDocument(text, { prettyErrors: false });
  const syntax = doc.errors[0];
  if (syntax) throw new RunbookInvalid(file, `not valid YAML: ${syntax.message.split('\n')[0]}`);
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 1000 }) ?? {};
  } catch (err) {
    throw new RunbookInvalid(file, `not valid YAML: ${(err as Error).message.split('\n')[0]}`, err);
  }
  const top = RunbookFileSchema.safeParse(data);
  if (!top.success) {
    const issue = top.error.issues[0]!;
    const key = issue.path[0];
    const where = typeof key === 'string' ? `${key}: ` : '';
    if (typeof key !== 'string') throw new RunbookInvalid(file, 'a runbook is a mapping with a list of "steps:"');
    throw new RunbookInvalid(file, `${where}${describe(issue, has(data, [key]))}`);
  }
  const steps = top.data.steps.map((raw, i) => parseStep(raw, `steps[${i}]`, file));
  const seen = new Map<string, string>();
  for (const step of flatten(steps)) {
    const first = seen.get(step.name);
    if (first) throw new RunbookInvalid(file, `${step.where}: field "name": "${step.name}" is already the name of ${first}: each step has its own`);
    seen.set(step.name, step.where);
  }
  return { file, ...(top.data.description ? { description: top.data.description } : {}), steps };
}

/** Every step, the steps of parallel blocks included, in file order. */
export function flatten(steps: RunbookStep[]): RunbookStep[] {
  return steps.flatMap((s) => (s.kind === 'parallel' ? [s, ...flatten(s.steps)] : [s]));
}

function parseStep(raw: unknown, where: string, file: string): RunbookStep {
  const invalid = (label: string, problem: string) => new RunbookInvalid(file, `${label}: ${problem}`);
  const expected = `one of ${STEP_KINDS.join(', ')}`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(where, `a step is a mapping with a name and one kind (${expected})`);
  const fields = raw as Record<string, unknown>;
  const label = typeof fields.name === 'string' && fields.name ? `${where} "${fields.name}"` : where;
  const kinds = STEP_KINDS.filter((k) => k in fields);
  if (kinds.length === 0) {
    const other = Object.keys(fields).find((k) => !COMMON_KEYS.includes(k));
    throw invalid(label, other ? `unknown step kind "${other}": expected ${expected}` : `no step kind: expected ${expected}`);
  }
  if (kinds.length > 1) throw invalid(label, `one kind per step, not ${kinds.join(' and ')}`);
  const kind = kinds[0]! as StepKind;
  const parsed = KIND_SCHEMAS[kind].safeParse(fields);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path.filter((k): k is string | number => typeof k !== 'symbol');
    // A field inside the kind's own mapping is named alone ("url"), as the user wrote it there.
    const inner = path[0] === kind && path.length > 1 ? path.slice(1) : path;
    const field = inner.map((k) => (typeof k === 'number' ? `[${k}]` : k)).join('.').replace(/\.\[/g, '[');
    const present = has(fields, path);
    const problem = issue.code === 'unrecognized_keys' ? `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}` : describe(issue, present);
    throw invalid(label, field ? `field "${field}": ${problem}` : problem);
  }
  const d = parsed.data as Record<string, unknown> & { name: string; timeout?: number; onFailure: RunbookStep['onFailure'] };
  const base = { name: d.name, onFailure: d.onFailure, where: `${where} "${d.name}"`, ...(d.timeout !== undefined ? { timeout: d.timeout } : {}) };
  switch (kind) {
    case 'start':
      return { ...base, kind, group: d.start as string };
    case 'wait-health':
      return { ...base, kind, group: d['wait-health'] as string };
    case 'script':
      return { ...base, kind, script: d.script as Extract<RunbookStep, { kind: 'script' }>['script'], ...(d.for ? { for: d.for as string } : {}) };
    case 'http':
      return { ...base, kind, http: d.http as Extract<RunbookStep, { kind: 'http' }>['http'] };
    case 'approval':
      return { ...base, kind, message: (d.approval as { message: string }).message };
    case 'parallel':
      return { ...base, kind, steps: (d.parallel as unknown[]).map((s, i) => parseStep(s, `${base.where}: parallel[${i}]`, file)) };
  }
}

function has(value: unknown, path: (string | number)[]): boolean {
  let at = value;
  for (const key of path) {
    if (typeof at !== 'object' || at === null || !(key in at)) return false;
    at = (at as Record<string | number, unknown>)[key];
  }
  return true;
}

function describe(issue: z.core.$ZodIssue, present: boolean): string {
  if (!present && (issue.code === 'invalid_type' || issue.code === 'invalid_value')) return 'missing';
  if (issue.code === 'invalid_type') return `expected ${issue.expected}`;
  if (issue.code === 'invalid_value') return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  return issue.message;
}

/**
 * The groups a runbook names must be groups of the plan it runs with (a runbook shared by plans
 * names groups every one of them has).
 */
export function checkAgainstPlan(runbook: Runbook, plan: Plan): void {
  const groups = plan.groups.map((g) => g.name);
  for (const step of flatten(runbook.steps)) {
    const [field, group] = step.kind === 'start' ? ['start', step.group] : step.kind === 'wait-health' ? ['wait-health', step.group] : step.kind === 'script' && step.for ? ['for', step.for] : [];
    if (group !== undefined && !groups.includes(group)) {
      throw new RunbookInvalid(runbook.file, `${step.where}: field "${field}": plan "${plan.name}" has no group "${group}" (its groups: ${groups.join(', ')})`);
    }
  }
}

/** The file of a runbook the config names, or `nameOrFile` itself when it is a path. */
export function runbookFile(config: Config, file: string, nameOrFile: string): string {
  const named = config.runbooks.find((r) => r.name === nameOrFile);
  if (named) return named.file;
  if (nameOrFile.includes('/')) return nameOrFile;
  throw new NotInConfig('runbook', nameOrFile, file);
}

/** The runbook file of a drill's test failover: its own, else its plan's; undefined when neither has one. */
export function drillRunbookFile(config: Config, file: string, drill: Drill): string | undefined {
  const name = drill.runbook ?? config.plans.find((p) => p.name === drill.plan)?.runbook;
  return name === undefined ? undefined : runbookFile(config, file, name);
}

/**
 * Every runbook the config names, loaded and checked against the plans (and drills' plans) that
 * use it: what `vmdr config check` and every command that loads the config find wrong.
 */
export async function checkConfigRunbooks(config: Config): Promise<void> {
  const loaded = new Map<string, Runbook>();
  for (const ref of config.runbooks) loaded.set(ref.name, await loadRunbook(ref.file));
  for (const plan of config.plans) if (plan.runbook) checkAgainstPlan(loaded.get(plan.runbook)!, plan);
  for (const drill of config.drills) {
    const plan = config.plans.find((p) => p.name === drill.plan);
    if (drill.runbook && plan) checkAgainstPlan(loaded.get(drill.runbook)!, plan);
  }
}
