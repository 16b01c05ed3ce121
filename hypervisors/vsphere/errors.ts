/**
 * What the vSphere client raises besides the adapter's shared errors (hypervisors/errors.ts:
 * HypervisorUnreachable, HypervisorTimedOut, InvalidPowerState, VmNotFound, VmAlreadyExists are
 * used as they are). Callers branch on `code`. No message here ever carries a password: the
 * password is never passed to any of these constructors.
 */
import { VmdrError, type ErrorSubject } from '../errors.js';

/** A `vsphere://` URI (or its settings) cannot be used as written. */
export class VsphereUriInvalid extends VmdrError {
  constructor(uri: string, detail: string) {
    super('VSPHERE_URI_INVALID', `vSphere URI ${JSON.stringify(uri)}: ${detail}`, {
      subject: { host: uri },
      remedy: 'write it as vsphere://user@host[:port]/Datacenter[?thumbprint=SHA256:…]; the password goes in passwordFile or passwordEnv',
    });
  }
}

/** The password file cannot be used: missing, unreadable, or readable by others than its owner. */
export class VspherePasswordFileOpen extends VmdrError {
  constructor(file: string, detail: string, cause?: unknown) {
    super('VSPHERE_PASSWORD_FILE_OPEN', `vSphere password file ${file}: ${detail}`, {
      subject: { file },
      cause,
      remedy: `make it a file only its owner can read: chmod 600 ${file}`,
    });
  }
}

/** Neither a password file nor the password's environment variable holds a password. */
export class VspherePasswordMissing extends VmdrError {
  constructor(host: string, variable: string) {
    super('VSPHERE_PASSWORD_MISSING', `no password for vSphere ${host}: the environment variable ${variable} is not set`, {
      subject: { host },
      remedy: `set ${variable}, or name a passwordFile (mode 0600) in the site's vsphere settings`,
    });
  }
}

/** The server refused the user name and password (InvalidLogin). */
export class VsphereLoginFailed extends VmdrError {
  constructor(host: string, user: string, cause?: unknown) {
    super('VSPHERE_LOGIN_FAILED', `vSphere ${host} refused the login of ${JSON.stringify(user)}: wrong user name or password`, {
      subject: { host, user },
      cause,
      remedy: 'check the user name in the URI and the password in the password file or environment variable',
    });
  }
}

/**
 * The server's certificate is not trusted, so nothing was sent to it: with a pinned thumbprint, its
 * fingerprint is another one; without one, it does not verify against the system's CAs (or caFile).
 */
export class VsphereCertificateRefused extends VmdrError {
  constructor(
    host: string,
    readonly presented: string,
    readonly pinned: string | undefined,
    detail?: string,
  ) {
    const message = pinned
      ? `vSphere ${host} presented a certificate with fingerprint ${presented}, not the pinned ${pinned}; nothing was sent to it`
      : `vSphere ${host} presented a certificate that is not trusted (${detail ?? 'unverified'}; its fingerprint is ${presented}); nothing was sent to it`;
    super('VSPHERE_CERTIFICATE_REFUSED', message, {
      subject: { host, presented, ...(pinned ? { pinned } : {}) },
      remedy: pinned
        ? 'if the host got a new certificate on purpose, check its fingerprint on the host itself and pin that one'
        : 'give the CA that signed it (caFile), or pin its fingerprint (?thumbprint=SHA256:…) after checking it on the host itself',
    });
  }
}

/** The CA file named in the site's vsphere settings cannot be read or holds no certificate. */
export class VsphereCaFileInvalid extends VmdrError {
  constructor(file: string, detail: string, cause?: unknown) {
    super('VSPHERE_CA_FILE_INVALID', `vSphere CA file ${file}: ${detail}`, { subject: { file }, cause });
  }
}

/** The server answered something that is not a SOAP answer of vim25 (wrong path, a proxy's page). */
export class VsphereProtocolError extends VmdrError {
  constructor(host: string, operation: string, detail: string, cause?: unknown) {
    super('VSPHERE_PROTOCOL_ERROR', `vSphere ${host} (${operation}): ${detail}`, { subject: { host }, cause, userError: false });
  }
}

/** An answer was larger than vmdr accepts: cut off rather than held in memory. */
export class VsphereResponseTooLarge extends VmdrError {
  constructor(host: string, operation: string, limitBytes: number, cause?: unknown) {
    super('VSPHERE_RESPONSE_TOO_LARGE', `vSphere ${host} (${operation}): the answer exceeded ${limitBytes} bytes and was cut off`, {
      subject: { host },
      cause,
      userError: false,
    });
  }
}

/** The session is not (or no longer) logged in: it was logged out, or logging in again did not help. */
export class VsphereNotAuthenticated extends VmdrError {
  constructor(host: string, operation: string, options: { loggedInAgain?: boolean; cause?: unknown } = {}) {
    super('VSPHERE_NOT_AUTHENTICATED', `vSphere ${host} (${operation}): the session is not logged in${options.loggedInAgain ? ', even after logging in again' : ''}`, {
      subject: { host },
      cause: options.cause,
    });
  }
}

/** The server refused a request as malformed or out of range (InvalidArgument, InvalidRequest). */
export class VsphereInvalidRequest extends VmdrError {
  constructor(host: string, operation: string, detail: string, subject: ErrorSubject = {}, cause?: unknown) {
    super('VSPHERE_INVALID_REQUEST', `vSphere ${host} refused ${operation} as invalid: ${detail}`, {
      subject: { host, ...subject },
      cause,
      userError: false,
    });
  }
}

/** An inventory object (datacenter, folder, datastore, pool, path) is not there. */
export class VsphereObjectNotFound extends VmdrError {
  constructor(kind: string, name: string, host: string, cause?: unknown) {
    super('VSPHERE_OBJECT_NOT_FOUND', `${kind} ${JSON.stringify(name)} does not exist on vSphere ${host}`, {
      subject: { host, [kind]: name },
      cause,
    });
  }
}

/** More than one object answers to a name the user gave: they must say which. */
export class VsphereNameAmbiguous extends VmdrError {
  constructor(kind: string, name: string, host: string, count: number) {
    super('VSPHERE_NAME_AMBIGUOUS', `${count} objects of kind ${kind} are named ${JSON.stringify(name)} on vSphere ${host}`, {
      subject: { host, [kind]: name },
      remedy: 'name it by inventory path (/Datacenter/vm/folder/name) or by UUID',
    });
  }
}

/** A datastore file is not there (FileNotFound). */
export class VsphereFileNotFound extends VmdrError {
  constructor(file: string, host: string, cause?: unknown) {
    super('VSPHERE_FILE_NOT_FOUND', `file ${file} does not exist on vSphere ${host}`, { subject: { file, host }, cause });
  }
}

/** An object of that name already exists where a new one was to be made (DuplicateName), not a VM. */
export class VsphereDuplicateName extends VmdrError {
  constructor(name: string, host: string, cause?: unknown) {
    super('VSPHERE_DUPLICATE_NAME', `an object named ${JSON.stringify(name)} already exists on vSphere ${host}`, {
      subject: { host, name },
      cause,
    });
  }
}

/** Any other SOAP fault: its vim25 type and the server's message. */
export class VsphereFault extends VmdrError {
  constructor(
    readonly faultType: string,
    host: string,
    operation: string,
    detail: string,
    subject: ErrorSubject = {},
    cause?: unknown,
  ) {
    super('VSPHERE_FAULT', `vSphere ${host} (${operation}): ${faultType}${detail ? `: ${detail}` : ''}`, {
      subject: { host, fault: faultType, ...subject },
      cause,
      userError: false,
    });
  }
}
