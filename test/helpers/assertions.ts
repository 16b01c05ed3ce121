import assert from 'node:assert/strict';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';

/** Asserts that `promise` rejects with a VmdrError of `code`; returns it for further checks. */
export async function rejectsWith(promise: Promise<unknown>, code: string): Promise<VmdrError> {
  let caught: unknown;
  await promise.then(
    () => assert.fail(`expected ${code}, but it succeeded`),
    (err: unknown) => {
      caught = err;
    },
  );
  assert.ok(caught instanceof VmdrError, `expected a VmdrError with code ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

/** One line on stderr, no stack trace, exit code 1: what a user sees for a user error. */
export function assertOneLineError(result: { code: number; stderr: string }, pattern: RegExp): void {
  assert.equal(result.code, 1, `exit code; stderr: ${result.stderr}`);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${result.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(result.stderr, /\n\s+at /);
}

/** The progress events (the one Progress shape) among a command's --json lines, or an onProgress's calls. */
export type ProgressEvent = Progress & { event?: string };

/**
 * Progress as a user reads it: every event has done <= total, and each subject's each phase of
 * `phases` ends with done == total (its last event). Returns the events of those phases.
 */
export function assertProgress(events: ProgressEvent[], phases: string[]): ProgressEvent[] {
  // A command's other lines (its result, its report) are not progress.
  const progress = events.filter((e) => e.event === 'progress' || (e.event === undefined && typeof e.phase === 'string'));
  for (const e of progress) {
    assert.ok(Number.isFinite(e.done) && Number.isFinite(e.total) && e.done >= 0 && e.done <= e.total, `done <= total: ${JSON.stringify(e)}`);
  }
  for (const phase of phases) {
    const of = progress.filter((e) => e.phase === phase);
    assert.ok(of.length > 0, `no progress of phase ${phase} among ${[...new Set(progress.map((e) => e.phase))].join(', ')}`);
    const last = new Map(of.map((e) => [JSON.stringify(e.subject ?? {}), e]));
    for (const e of last.values()) assert.equal(e.done, e.total, `phase ${phase} ended with done == total: ${JSON.stringify(e)}`);
  }
  return progress.filter((e) => phases.includes(e.phase));
}

/** The JSON lines a command wrote with --json. */
export function jsonLines<T = Record<string, unknown>>(stdout: string): T[] {
  return stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
}
