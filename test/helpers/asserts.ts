/** Assertions shared by the tests. */
import type { Test } from 'tap';
import { CvmfsError } from '../../src/errors';

/** Asserts `fn` throws a CvmfsError with `code`. */
export function throwsCode(t: Test, fn: () => unknown, code: string, msg: string): void {
  try {
    fn();
    t.fail(`${msg}: did not throw`);
  } catch (e) {
    t.equal(CvmfsError.is(e) ? e.code : `not a CvmfsError: ${String(e)}`, code, msg);
  }
}
