/**
 * The one place where libvirt's failures become vmdr's typed errors.
 *
 * Why message text: @unraid/libvirt gives every LibvirtError the code -1 (it drops virError's code
 * and domain), and virsh reports failures only as text on stderr. libvirt's messages are stable
 * across releases for the cases below; everything else becomes HypervisorOperationFailed with
 * libvirt's own words. Callers branch on the resulting `code`, never on the text; the original is
 * kept as `cause`.
 */
import {
  GuestAgentUnavailable,
  HypervisorOperationFailed,
  HypervisorUnreachable,
  InvalidPowerState,
  NetworkNotFound,
  VmAlreadyExists,
  VmdrError,
  VmNotFound,
} from '../errors.js';

export interface LibvirtErrorContext {
  /** A verb phrase saying what we were doing: "start VM", "define network". */
  operation: string;
  host: string;
  vm?: string;
  network?: string;
}

const UNREACHABLE = [
  /failed to connect socket/i,
  /transport in URL not recognised/i,
  /no connection driver available/i,
  /cannot read CA certificate/i,
  /unable to connect to server/i,
  /connection refused/i,
  /end of file while reading data/i,
  /cannot recv data/i,
  /failed to connect to the hypervisor/i,
  /client socket is closed/i,
  /cannot write data/i,
];
/**
 * A connection libvirtd closed under us (it restarted): the first call on it fails to write its
 * request ("Cannot write data: Broken pipe"), the next finds the socket closed. Either way the
 * request never reached a libvirtd, so it is safe to send again on a fresh connection.
 */
const NOT_SENT = [/client socket is closed/i, /cannot write data/i];

/** The call failed before its request reached libvirtd (see NOT_SENT). */
export function neverReachedLibvirt(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return NOT_SENT.some((re) => re.test(message));
}

export function translateLibvirtError(err: unknown, ctx: LibvirtErrorContext): VmdrError {
  if (err instanceof VmdrError) return err;
  const message = (err instanceof Error ? err.message : String(err)).trim();
  const detail = message || 'libvirt gave no reason';

  if (UNREACHABLE.some((re) => re.test(message))) return new HypervisorUnreachable(ctx.host, detail, err);
  if (/domain not found|no domain with matching/i.test(message)) return new VmNotFound(ctx.vm ?? '?', ctx.host, err);
  if (/network not found|no network with matching/i.test(message)) {
    return new NetworkNotFound(ctx.network ?? quoted(message) ?? '?', ctx.host, err);
  }
  if (ctx.vm !== undefined) {
    if (/domain .*already exists|already exists with uuid/i.test(message)) return new VmAlreadyExists(ctx.vm, ctx.host, err);
    // "Requested operation is not valid: domain is not running" (qemu), "domain 'x' not running" (test
    // driver), "cannot perform disk backup for inactive domain" (backup-begin)
    if (/(domain|guest)( '[^']*')? (is )?not running|for inactive domain/i.test(message)) {
      return new InvalidPowerState(ctx.vm, ctx.host, 'shutoff', `cannot ${ctx.operation}`, err);
    }
    // "Requested operation is not valid: domain is already running", "... is already active"
    if (/(is )?already (running|active)/i.test(message)) {
      return new InvalidPowerState(ctx.vm, ctx.host, 'running', `cannot ${ctx.operation}`, err);
    }
    // qemu-agent-command: "argument unsupported: QEMU guest agent is not configured" (no channel);
    // "Guest agent is not responding: QEMU guest agent is not connected" (no agent on the channel),
    // "...: Guest agent not available for now" (it did not answer in time)
    if (/guest agent is not configured/i.test(message)) return new GuestAgentUnavailable(ctx.vm, ctx.host, 'not-configured', detail, err);
    if (/guest agent is not (responding|connected|available)|guest agent not available/i.test(message)) {
      return new GuestAgentUnavailable(ctx.vm, ctx.host, 'not-answering', detail, err);
    }
  }
  return new HypervisorOperationFailed(ctx.operation, ctx.host, detail, { vm: ctx.vm, cause: err });
}

function quoted(message: string): string | undefined {
  return /'([^']+)'/.exec(message)?.[1];
}
