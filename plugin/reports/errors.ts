/** What goes wrong with a stored report: its key, its files, a verification that fails. */
import { VmdrError } from '../../hypervisors/errors.js';

/** The signing key cannot be read or made (a file that is not a key, a directory that is not 0700). */
export class ReportKeyUnusable extends VmdrError {
  constructor(file: string, why: string, cause?: unknown) {
    super('REPORT_KEY_UNUSABLE', `report signing key ${file}: ${why}`, { subject: { file }, ...(cause === undefined ? {} : { cause }) });
  }
}

/** A run has no stored report: it is still running, or it is not a run of this state file. */
export class ReportNotStored extends VmdrError {
  constructor(run: string, why: string) {
    super('REPORT_NOT_STORED', `run ${run} has no report: ${why}`, { subject: { failover: run } });
  }
}

/**
 * A report that does not verify: a byte of it (or of a screenshot it names) changed after it was
 * signed, it was signed by another key, or it is not a report at all. The message names the file
 * and what does not match.
 */
export class ReportNotVerified extends VmdrError {
  constructor(file: string, what: string) {
    super('REPORT_NOT_VERIFIED', `${file}: ${what}`, { subject: { file } });
  }
}
