import assert from 'node:assert/strict';
import { VmdrError } from '../../hypervisors/errors.js';

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
