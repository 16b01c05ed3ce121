import { VmdrError } from '../../hypervisors/errors.js';

/** The state file cannot be opened or created: bad path, permissions, not a SQLite file, locked past the busy timeout. */
export class StateUnavailable extends VmdrError {
  constructor(file: string, detail: string, cause?: unknown) {
    super('STATE_UNAVAILABLE', `state store ${file}: ${detail}`, {
      subject: { file },
      cause,
      remedy: 'check that the directory exists and is writable by this user, and that the file is a vmdr state file',
    });
  }
}

/** The state file was written by a newer vmdr; an older one must not touch it. */
export class StateSchemaTooNew extends VmdrError {
  constructor(file: string, found: number, known: number) {
    super('STATE_SCHEMA_TOO_NEW', `state store ${file} has schema version ${found}; this vmdr knows up to ${known}`, {
      subject: { file, found, known },
      remedy: 'upgrade vmdr on this host',
    });
  }
}

/** A sync run id that the store does not have. */
export class SyncRunNotFound extends VmdrError {
  constructor(runId: number) {
    super('SYNC_RUN_NOT_FOUND', `sync run ${runId} does not exist`, { subject: { run: runId }, userError: false });
  }
}
