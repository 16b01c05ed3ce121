/**
 * An HTTP step: one request (the body filled from its template), one deadline for the whole
 * exchange, and only the first OUTPUT_LIMIT_BYTES of the response kept. The status must be the
 * one the step expects (any 2xx when it names none).
 */
import { RunbookStepFailed, RunbookStepTimedOut } from './errors.js';
import { OUTPUT_LIMIT_BYTES } from './output-tail.js';
import type { HttpSpec } from './schema.js';
import { fillTemplate, type TemplateValues } from './template.js';

export interface HttpOutcome {
  method: string;
  url: string;
  status: number;
  /** The start of the response body. */
  body: string;
  durationMs: number;
}

export async function callHttp(step: string, spec: HttpSpec, values: TemplateValues, timeoutMs: number, signal?: AbortSignal): Promise<HttpOutcome> {
  const started = Date.now();
  const deadline = AbortSignal.timeout(timeoutMs);
  const both = signal ? AbortSignal.any([signal, deadline]) : deadline;
  const body = spec.body === undefined ? undefined : fillTemplate(spec.body, values);
  let outcome: HttpOutcome;
  try {
    const response = await fetch(spec.url, { method: spec.method, headers: spec.headers, ...(body !== undefined ? { body } : {}), signal: both, redirect: 'manual' });
    outcome = { method: spec.method, url: spec.url, status: response.status, body: await readBounded(response), durationMs: Date.now() - started };
  } catch (err) {
    if (deadline.aborted) throw new RunbookStepTimedOut(step, timeoutMs, { method: spec.method, url: spec.url });
    const reason = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new RunbookStepFailed(step, `${spec.method} ${spec.url}: ${reason?.code ?? reason?.message ?? (err as Error).message}`, { method: spec.method, url: spec.url }, err);
  }
  const ok = spec.expect ? outcome.status === spec.expect.status : outcome.status >= 200 && outcome.status < 300;
  if (!ok) throw new RunbookStepFailed(step, `${spec.method} ${spec.url} answered ${outcome.status}, expected ${spec.expect?.status ?? '2xx'}`, outcome);
  return outcome;
}

/** The start of the body; the rest is not read (the connection is let go). */
async function readBounded(response: Response): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (size < OUTPUT_LIMIT_BYTES) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.length;
  }
  await reader.cancel().catch(() => undefined);
  return Buffer.concat(chunks).subarray(0, OUTPUT_LIMIT_BYTES).toString('utf8');
}
