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
