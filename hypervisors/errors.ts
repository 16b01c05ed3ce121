/**
 * The root of every error vmdr raises on purpose.
 *
 * Callers branch on `code`, never on message text. `subject` names the objects the error concerns
 * (vm, host, file, point, ...) so the CLI and the API can report them without parsing the message.
 * `userError` marks errors caused by input or environment the user controls, as opposed to a peer
 * breaking a protocol or vmdr's own state going wrong. The CLI prints every VmdrError as one line;
 * the stack trace only with --debug. This class lives beside the adapter interface because both the
 * adapters and plugin/ raise errors of this shape and adapters may not import plugin/.
 */
export interface ErrorSubject {
  vm?: string;
  host?: string;
  file?: string;
  path?: string;
  point?: string;
  network?: string;
  tenant?: string;
  [key: string]: string | number | undefined;
}

/**
 * The failure of a hypervisor's own library behind a VmdrError, as that library numbers it (for
 * libvirt: virterror.h's error code and domain), so a user can look it up and a bug report carries it.
 */
export interface LibraryFailure {
  /** Which library: the key it is reported under in the JSON ("libvirt"). */
  library: string;
  code: number;
  domain: number;
}

/** The library failure carried by `cause`, or by the cause of a VmdrError it wraps. */
function libraryFailureOf(cause: unknown): LibraryFailure | undefined {
  if (cause instanceof VmdrError) return cause.libraryFailure;
  const failure = (cause as { libraryFailure?: LibraryFailure } | null | undefined)?.libraryFailure;
  return typeof failure?.library === 'string' ? failure : undefined;
}

export class VmdrError extends Error {
  readonly code: string;
  readonly subject: ErrorSubject;
  readonly userError: boolean;
  /** What the user can do about it, when we know. */
  readonly remedy: string | undefined;
  /** What the hypervisor's library said, when a failure of it caused this error. */
  readonly libraryFailure: LibraryFailure | undefined;

  constructor(
    code: string,
    message: string,
    options: { subject?: ErrorSubject; cause?: unknown; userError?: boolean; remedy?: string } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.subject = options.subject ?? {};
    this.userError = options.userError ?? true;
    this.remedy = options.remedy;
    this.libraryFailure = libraryFailureOf(options.cause);
  }

  toJSON(): Record<string, unknown> {
    const failure = this.libraryFailure;
    const library = failure ? { [failure.library]: { code: failure.code, domain: failure.domain } } : {};
    return { code: this.code, message: this.message, ...this.subject, remedy: this.remedy, ...library };
  }
}

/** The hypervisor could not be reached at all (daemon down, wrong host, refused connection). */
export class HypervisorUnreachable extends VmdrError {
  /** `during`: the call that found it unreachable, so that one line says what failed and for which VM. */
  constructor(host: string, detail: string, cause?: unknown, during: { operation?: string; vm?: string } = {}) {
    const forVm = during.vm !== undefined ? ` for VM ${JSON.stringify(during.vm)}` : '';
    const operation = during.operation ? ` (${during.operation})` : '';
    super('HYPERVISOR_UNREACHABLE', `cannot reach hypervisor ${host}${forVm}${operation}: ${detail}`, {
      subject: { host, vm: during.vm },
      cause,
      remedy: host.startsWith('qemu') ? 'is libvirtd running? On the lab machine, scripts/lab/start-daemons starts it' : undefined,
    });
  }
}

/** The hypervisor's library refused the URI itself (an unknown transport, a malformed query). */
export class HypervisorUriInvalid extends VmdrError {
  constructor(uri: string, detail: string, cause?: unknown) {
    super('HYPERVISOR_URI_INVALID', `hypervisor URI ${JSON.stringify(uri)} is not usable: ${detail}`, { subject: { host: uri }, cause });
  }
}

/** A call to the hypervisor did not return in time (a hung daemon, a stuck storage device). */
export class HypervisorTimedOut extends VmdrError {
  constructor(operation: string, host: string, timeoutMs: number, options: { vm?: string; cause?: unknown } = {}) {
    const on = options.vm ? ` VM ${JSON.stringify(options.vm)} on` : '';
    super('HYPERVISOR_TIMED_OUT', `${operation}${on} ${host}: no answer within ${timeoutMs / 1000} s`, {
      subject: { host, vm: options.vm },
      cause: options.cause,
      remedy: 'is the hypervisor daemon responsive? The call may still complete there: check the object before retrying',
    });
  }
}

/** The hypervisor refused a definition (a VM's or a network's): malformed or invalid XML, an unsupported setting. */
export class DefinitionRejected extends VmdrError {
  constructor(what: string, host: string, detail: string, subject: ErrorSubject = {}, cause?: unknown) {
    super('DEFINITION_REJECTED', `${host} refused the definition of ${what}: ${detail}`, { subject: { host, ...subject }, cause });
  }
}

/** No adapter knows the scheme of this URI. */
export class UnknownHypervisorUri extends VmdrError {
  constructor(uri: string, known: readonly string[]) {
    super('UNKNOWN_HYPERVISOR_URI', `unknown hypervisor URI ${JSON.stringify(uri)}: expected one of ${known.join(', ')}`, {
      subject: { host: uri },
    });
  }
}

export class VmNotFound extends VmdrError {
  constructor(vm: string, host: string, cause?: unknown) {
    super('VM_NOT_FOUND', `VM ${JSON.stringify(vm)} does not exist on ${host}`, { subject: { vm, host }, cause });
  }
}

export class VmAlreadyExists extends VmdrError {
  constructor(vm: string, host: string, cause?: unknown) {
    super('VM_ALREADY_EXISTS', `VM ${JSON.stringify(vm)} already exists on ${host}`, { subject: { vm, host }, cause });
  }
}

/** The VM is in a power state the operation cannot work from (start a running VM, ...). */
export class InvalidPowerState extends VmdrError {
  constructor(vm: string, host: string, state: string, wanted: string, cause?: unknown) {
    super('INVALID_POWER_STATE', `VM ${JSON.stringify(vm)} on ${host} is ${state}; ${wanted}`, {
      subject: { vm, host, state },
      cause,
    });
  }
}

export class NetworkNotFound extends VmdrError {
  constructor(network: string, host: string, cause?: unknown) {
    super('NETWORK_NOT_FOUND', `network ${JSON.stringify(network)} does not exist on ${host}`, {
      subject: { network, host },
      cause,
    });
  }
}

/** The adapter cannot do this on this hypervisor (vSphere simulator without CBT, ...). */
export class Unsupported extends VmdrError {
  constructor(operation: string, host: string) {
    super('UNSUPPORTED', `${operation} is not supported on ${host}`, { subject: { host } });
  }
}

/** A template was asked for a value nobody supplied. */
export class TemplateValueMissing extends VmdrError {
  constructor(file: string, name: string) {
    super('TEMPLATE_VALUE_MISSING', `${file}: template value {{${name}}} was not supplied`, { subject: { file, value: name } });
  }
}

/** The hypervisor refused or failed an operation for a reason we have no better class for. */
export class HypervisorOperationFailed extends VmdrError {
  constructor(operation: string, host: string, detail: string, options: { vm?: string; cause?: unknown } = {}) {
    const on = options.vm ? ` VM ${JSON.stringify(options.vm)} on` : '';
    super('HYPERVISOR_OPERATION_FAILED', `${operation}${on} ${host}: ${detail}`, {
      subject: { host, vm: options.vm },
      cause: options.cause,
      userError: false,
    });
  }
}

/** The VM has no NIC with the MAC the caller named. */
export class NicNotFound extends VmdrError {
  constructor(vm: string, host: string, mac: string) {
    super('NIC_NOT_FOUND', `VM ${JSON.stringify(vm)} on ${host} has no NIC with MAC ${mac}`, { subject: { vm, host, mac } });
  }
}

/** The VM has no disk with the guest target the caller named. */
export class DiskNotFound extends VmdrError {
  constructor(vm: string, host: string, target: string) {
    super('DISK_NOT_FOUND', `VM ${JSON.stringify(vm)} on ${host} has no disk ${target}`, { subject: { vm, host, disk: target } });
  }
}

/** A NIC identity cannot be applied as asked: malformed MAC, or a MAC two NICs would share. */
export class InvalidNicIdentity extends VmdrError {
  constructor(vm: string, host: string, mac: string, detail: string) {
    super('INVALID_NIC_IDENTITY', `VM ${JSON.stringify(vm)} on ${host}, NIC ${mac}: ${detail}`, { subject: { vm, host, mac } });
  }
}

/** A guest identity cannot be given as asked: a value that is not a hostname, a MAC or an IPv4 address. */
export class IdentityInvalid extends VmdrError {
  constructor(vm: string, field: string, value: string, expected: string) {
    const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
    super('IDENTITY_INVALID', `VM ${JSON.stringify(vm)}: identity ${field} ${JSON.stringify(shown)} is not ${expected}`, { subject: { vm, field } });
  }
}

/** A boot's name would not make a file name of its own (prepareBootDisks, releaseBootDisks). */
export class BootNameInvalid extends VmdrError {
  constructor(boot: string) {
    const shown = boot.length > 80 ? `${boot.slice(0, 80)}…` : boot;
    super('BOOT_NAME_INVALID', `boot name ${JSON.stringify(shown)} is not 1 to 128 letters, digits, '.', '_' or '-' starting with a letter or digit`, {
      subject: { boot: shown },
      userError: false,
    });
  }
}

/** A graceful stop asked the guest to shut down and it was still running at the deadline. */
export class StopTimedOut extends VmdrError {
  constructor(vm: string, host: string, timeoutMs: number) {
    super('STOP_TIMED_OUT', `VM ${JSON.stringify(vm)} on ${host} did not shut down within ${timeoutMs / 1000} s`, {
      subject: { vm, host },
      remedy: 'stop it with mode "force", or pass forceOnTimeout',
    });
  }
}

/**
 * The QEMU guest agent could not be asked. `reason` says whether waiting can help:
 * 'not-configured': the VM has no agent channel, so no agent can ever answer;
 * 'not-answering': the channel is there but no agent answered (the guest is still booting, or
 * qemu-guest-agent is not installed or not running in it); a health wait asks again.
 */
export class GuestAgentUnavailable extends VmdrError {
  constructor(
    vm: string,
    host: string,
    readonly reason: 'not-configured' | 'not-answering',
    detail: string,
    cause?: unknown,
  ) {
    const what =
      reason === 'not-configured'
        ? `VM ${JSON.stringify(vm)} on ${host} has no QEMU guest agent channel`
        : `the QEMU guest agent of VM ${JSON.stringify(vm)} on ${host} does not answer`;
    super('GUEST_AGENT_UNAVAILABLE', `${what}: ${detail}`, {
      subject: { vm, host, reason },
      cause,
      remedy:
        reason === 'not-configured'
          ? "add <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel> to its definition and install qemu-guest-agent in the guest, or drop the agent health check"
          : 'is qemu-guest-agent installed and running in the guest?',
    });
  }
}

/** vmdr refuses to change or remove an object it did not make (a network, a VM, a checkpoint). */
export class NotManagedByVmdr extends VmdrError {
  constructor(kind: string, name: string, host: string, subject: ErrorSubject = {}) {
    super('NOT_MANAGED_BY_VMDR', `${kind} ${JSON.stringify(name)} on ${host} was not made by vmdr; leaving it alone`, {
      subject: { host, ...subject },
      remedy: `remove it yourself if it is no longer needed`,
    });
  }
}

/** A network of that name exists but is not what was asked for (it forwards traffic, another bridge). */
export class NetworkConflict extends VmdrError {
  constructor(network: string, host: string, detail: string) {
    super('NETWORK_CONFLICT', `network ${JSON.stringify(network)} on ${host} ${detail}`, { subject: { network, host } });
  }
}

/** A template file could not be used: missing, unreadable or not well-formed. */
export class TemplateInvalid extends VmdrError {
  constructor(file: string, detail: string, cause?: unknown) {
    super('TEMPLATE_INVALID', `${file}: ${detail}`, { subject: { file }, cause });
  }
}

/**
 * An operation failed half way and undoing its side effects failed too. `cause` is the original
 * failure (branch on its code); `cleanupError` says what was left behind.
 */
export class CleanupFailed extends VmdrError {
  readonly cleanupError: unknown;
  constructor(cause: unknown, cleanup: string, cleanupError: unknown) {
    const original = cause instanceof Error ? cause.message : String(cause);
    const failed = cleanupError instanceof Error ? cleanupError.message : String(cleanupError);
    super('CLEANUP_FAILED', `${original}; cleaning up (${cleanup}) also failed: ${failed}`, {
      subject: cause instanceof VmdrError ? cause.subject : {},
      cause,
      userError: false,
    });
    this.cleanupError = cleanupError;
  }
}

/** qemu-img, qemu-nbd or another image tool refused or failed: the image, the operation and its stderr. */
export class ImageOperationFailed extends VmdrError {
  constructor(operation: string, file: string, detail: string, cause?: unknown) {
    super('IMAGE_OPERATION_FAILED', `${operation} ${file}: ${detail}`, { subject: { file }, cause });
  }
}

/**
 * A checkpoint's dirty bitmap cannot be used for an incremental backup: QEMU died without saving
 * it, it was removed, or the disk joined the VM after the checkpoint. Only a full read or a
 * comparison of block hashes can tell what changed since; callers branch on this code.
 */
export class CheckpointBitmapBroken extends VmdrError {
  constructor(vm: string, host: string, checkpoint: string, detail: string, extra: { disk?: string; cause?: unknown } = {}) {
    super('CHECKPOINT_BITMAP_BROKEN', detail, {
      subject: { vm, host, checkpoint, ...(extra.disk ? { disk: extra.disk } : {}) },
      ...(extra.cause ? { cause: extra.cause } : {}),
    });
  }
}

/**
 * The VM runs a job vmdr may not end: another tool's backup or migration, or a backup of a vmdr
 * cycle that is still running. A new backup cannot begin until it ends; the next cycle looks again.
 */
export class BackupJobBusy extends VmdrError {
  constructor(vm: string, host: string, job: string, owner: string, remedy: string) {
    super('BACKUP_JOB_BUSY', `VM ${JSON.stringify(vm)} on ${host} has a running ${job} ${owner}; a new backup cannot begin until it ends`, {
      subject: { vm, host, job },
      remedy,
    });
  }
}

/** A backup job vmdr left on a VM would not end: the abort failed, or the job outlived the deadline. */
export class BackupJobStuck extends VmdrError {
  constructor(vm: string, host: string, job: string, owner: string, detail: string, remedy: string, cause?: unknown) {
    super('BACKUP_JOB_STUCK', `VM ${JSON.stringify(vm)} on ${host}: the ${job} ${owner} did not end: ${detail}`, {
      subject: { vm, host, job },
      remedy,
      cause,
    });
  }
}

/**
 * The VM has no display to take a picture of (libvirt: no video device), so asking again will not
 * help; a drill records the screenshot as missing and goes on.
 */
export class NoDisplay extends VmdrError {
  constructor(vm: string, host: string) {
    super('NO_DISPLAY', `VM ${JSON.stringify(vm)} on ${host} has no display to take a screenshot of`, {
      subject: { vm, host },
      remedy: "give it a video device (libvirt: <video><model type='vga'/></video> in its definition)",
    });
  }
}

/**
 * The hypervisor's picture of a VM's screen was refused: larger than any screen, larger than its
 * own header says, of an unknown type or malformed. What is on a screen is the guest's to choose,
 * so nothing of such a frame is kept.
 */
export class ScreenshotInvalid extends VmdrError {
  constructor(vm: string, host: string, detail: string, cause?: unknown) {
    super('SCREENSHOT_INVALID', `the screenshot of VM ${JSON.stringify(vm)} on ${host} was refused: ${detail}`, { subject: { vm, host }, cause, userError: false });
  }
}
