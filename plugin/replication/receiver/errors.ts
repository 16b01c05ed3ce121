import { VmdrError } from '../../../hypervisors/errors.js';

/** The receiver refused a request before touching any replica (unknown protection, wrong base, busy). */
export class ReceiverRefused extends VmdrError {
  constructor(code: string, message: string, readonly status: number, subject: { protection?: string; point?: string } = {}) {
    super(code, message, { subject });
  }
}

/** The stream names a recovery point as its base that is not the replica's newest. */
export const STREAM_BASE_MISMATCH = 'STREAM_BASE_MISMATCH';
export const PROTECTION_UNKNOWN = 'PROTECTION_UNKNOWN';
