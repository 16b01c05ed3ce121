/**
 * What can go wrong talking NBD. Callers branch on `code`; `subject` names the server (`host` as
 * host:port, or `socket`), the `export`, and for failed requests the `command`, `offset` and `errno`.
 */
import { VmdrError, type ErrorSubject } from '../../../hypervisors/errors.js';
import type { NbdListen } from '../../../hypervisors/types.js';

export function describeTarget(target: NbdListen): string {
  return target.transport === 'tcp' ? `${target.host}:${target.port}` : target.socket;
}

export function targetSubject(target: NbdListen): ErrorSubject {
  return target.transport === 'tcp' ? { host: describeTarget(target) } : { socket: target.socket };
}

/** The root of the NBD client's errors. */
export class NbdError extends VmdrError {}

/** Nothing answered at the address: connection refused, no such socket, the connect timed out. */
export class NbdConnectFailed extends NbdError {
  constructor(target: NbdListen, detail: string, cause?: unknown) {
    super('NBD_CONNECT_FAILED', `cannot connect to NBD server ${describeTarget(target)}: ${detail}`, {
      subject: targetSubject(target),
      cause,
      remedy: 'is the NBD server (qemu-nbd, nbdkit, the backup job) running and listening there?',
    });
  }
}

/** The server answered but the handshake did not complete (not NBD, refused option, timeout). */
export class NbdHandshakeFailed extends NbdError {
  constructor(target: NbdListen, exportName: string, detail: string, cause?: unknown) {
    super('NBD_HANDSHAKE_FAILED', `NBD handshake with ${describeTarget(target)} failed: ${detail}`, {
      subject: { ...targetSubject(target), export: exportName },
      cause,
    });
  }
}

/**
 * The server or export lacks something this client needs (oldstyle or non-fixed newstyle handshake,
 * no structured replies, TLS required), or the export does not offer the command asked for
 * (a write on a read-only export, trim without NBD_FLAG_SEND_TRIM).
 */
export class NbdUnsupported extends NbdError {
  constructor(subject: ErrorSubject, detail: string) {
    super('NBD_UNSUPPORTED', detail, { subject });
  }
}

export class NbdExportNotFound extends NbdError {
  constructor(target: NbdListen, exportName: string, serverMessage: string) {
    const said = serverMessage ? ` (server said: ${serverMessage})` : '';
    super('NBD_EXPORT_NOT_FOUND', `NBD server ${describeTarget(target)} has no export ${JSON.stringify(exportName)}${said}`, {
      subject: { ...targetSubject(target), export: exportName },
    });
  }
}

/** A meta context the caller asked for was not selected by the server (unknown bitmap, no base:allocation). */
export class NbdMetaContextUnavailable extends NbdError {
  constructor(target: NbdListen, exportName: string, context: string, detail = 'the server does not offer it') {
    super('NBD_META_CONTEXT_UNAVAILABLE', `NBD export ${JSON.stringify(exportName)} on ${describeTarget(target)}: meta context ${context}: ${detail}`, {
      subject: { ...targetSubject(target), export: exportName, context },
      remedy: context.startsWith('qemu:dirty-bitmap:') ? 'the bitmap is gone or was not exported; resync by comparing block hashes' : undefined,
    });
  }
}

/** The server answered a request with an error; `errno` is the NBD error name (EIO, ENOSPC, EPERM, ...). */
export class NbdServerError extends NbdError {
  readonly errno: string;
  constructor(request: { exportName: string; command: string; offset: number; length: number }, errno: string, serverMessage: string) {
    const said = serverMessage ? `: ${serverMessage}` : '';
    super('NBD_SERVER_ERROR', `NBD ${request.command} of ${request.length} bytes at ${request.offset} on export ${JSON.stringify(request.exportName)} failed with ${errno}${said}`, {
      subject: { export: request.exportName, command: request.command, offset: request.offset, length: request.length, errno },
      userError: false,
    });
    this.errno = errno;
  }
}

/** The connection ended while requests were pending or a reply was half read, or the client was closed. */
export class NbdConnectionClosed extends NbdError {
  constructor(exportName: string, detail: string, cause?: unknown) {
    super('NBD_CONNECTION_CLOSED', `NBD connection to export ${JSON.stringify(exportName)} closed: ${detail}`, {
      subject: { export: exportName },
      cause,
      userError: false,
    });
  }
}

/** The server sent something the protocol forbids; the client drops the connection (a hard disconnect). */
export class NbdProtocolError extends NbdError {
  constructor(exportName: string, detail: string) {
    super('NBD_PROTOCOL_ERROR', `NBD protocol violation by the server of export ${JSON.stringify(exportName)}: ${detail}`, {
      subject: { export: exportName },
      userError: false,
    });
  }
}
