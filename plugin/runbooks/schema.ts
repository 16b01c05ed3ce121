/**
 * The steps of a runbook file, one zod schema per kind. A step is a mapping with a `name`, exactly
 * one kind key (start, wait-health, script, http, approval, parallel) and the optional `timeout`
 * and `onFailure`. load.ts reads a step's kind first, then checks it against that kind's schema, so
 * an error names the step and the one field that is wrong.
 */
import { z } from 'zod';
import { absolutePath, durationBetween, name, url } from '../config/schema.js';
import { templateProblem } from './template.js';

export const STEP_KINDS = ['start', 'wait-health', 'script', 'http', 'approval', 'parallel'] as const;
export type StepKind = (typeof STEP_KINDS)[number];

/** stop: the run stops there; continue: recorded as failed, the next step runs; rollback: the run stops and undoes what it started. */
export const ON_FAILURE = ['stop', 'continue', 'rollback'] as const;

const common = {
  name,
  timeout: durationBetween('1s', '24d').optional(),
  onFailure: z.enum(ON_FAILURE).default('stop'),
};

const template = z.string().superRefine((text, ctx) => {
  const problem = templateProblem(text);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name (letters, digits, "_")');
const httpStatus = z.number().int('an HTTP status such as 200').min(100, 'an HTTP status from 100 to 599').max(599, 'an HTTP status from 100 to 599');

export const ScriptSchema = z.strictObject({
  path: absolutePath,
  args: z.array(z.string()).default([]),
  env: z.record(envName, z.string()).default({}),
});

export const HttpSchema = z.strictObject({
  method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']).default('POST'),
  url: url(/^https?$/, 'an http:// or https:// URL'),
  /** A template: ${run.id}, ${run.kind}, ${plan}. */
  body: template.optional(),
  headers: z.record(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'an HTTP header name'), z.string()).default({}),
  /** The status that counts as success; any 2xx when absent. */
  expect: z.strictObject({ status: httpStatus }).optional(),
});

/** The schema of each kind, the kind's own key holding what it needs. `parallel`'s steps are checked one by one by load.ts. */
export const KIND_SCHEMAS = {
  start: z.strictObject({ ...common, start: name }),
  'wait-health': z.strictObject({ ...common, 'wait-health': name }),
  script: z.strictObject({ ...common, script: ScriptSchema, for: name.optional() }),
  http: z.strictObject({ ...common, http: HttpSchema }),
  approval: z.strictObject({ ...common, approval: z.strictObject({ message: z.string().min(1, 'a message for whoever approves') }) }),
  parallel: z.strictObject({ ...common, parallel: z.array(z.unknown()).min(1, 'at least one step') }),
} satisfies Record<StepKind, z.ZodType>;

interface Common {
  name: string;
  /** The step's own deadline; each kind has its default (runbooks/execute.ts). */
  timeout?: number;
  onFailure: (typeof ON_FAILURE)[number];
  /** Where the step is in its file, as errors name it: steps[2] "notify-dns". */
  where: string;
}

export type ScriptSpec = z.infer<typeof ScriptSchema>;
export type HttpSpec = z.infer<typeof HttpSchema>;

export type RunbookStep = Common &
  (
    | { kind: 'start'; group: string }
    | { kind: 'wait-health'; group: string }
    | { kind: 'script'; script: ScriptSpec; for?: string }
    | { kind: 'http'; http: HttpSpec }
    | { kind: 'approval'; message: string }
    | { kind: 'parallel'; steps: RunbookStep[] }
  );

export interface Runbook {
  file: string;
  description?: string;
  steps: RunbookStep[];
}

export const RunbookFileSchema = z.strictObject({
  description: z.string().optional(),
  steps: z.array(z.unknown()).min(1, 'at least one step'),
});
