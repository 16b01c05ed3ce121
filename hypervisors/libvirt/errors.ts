/**
 * The one place where libvirt's failures become vmdr's typed errors, by libvirt's error code and
 * domain (virterror.h), never by its message text; libvirt's words are kept in the message and
 * the original failure as `cause`. Power-state refusals are decided in connection.ts, which can
 * ask the VM's state (drivers report them with different codes).
 */
import {
  DefinitionRejected,
  GuestAgentUnavailable,
  HypervisorOperationFailed,
  HypervisorTimedOut,
  HypervisorUnreachable,
  HypervisorUriInvalid,
  NetworkNotFound,
  VmAlreadyExists,
  VmdrError,
  VmNotFound,
} from '../errors.js';
import { VIR_ERR, VIR_FROM } from './api/codes.js';
import { LibvirtCallFailed, LibvirtCallTimedOut } from './api/pool.js';

export interface LibvirtErrorContext {
  /** A verb phrase saying what we were doing: "start VM", "define network". */
  operation: string;
  host: string;
  vm?: string;
  network?: string;
  /** Asking the guest agent: an unsupported argument then means the VM has no agent channel. */
  agent?: boolean;
}

/** The connection itself failed: libvirtd went away, refused us, or never answered. */
export function isConnectionFailure(err: unknown): boolean {
  if (!(err instanceof LibvirtCallFailed)) return false;
  const { code, domain } = err.detail;
  if (code === VIR_ERR.NO_CONNECT || code === VIR_ERR.INVALID_CONN || code === VIR_ERR.AUTH_FAILED) return true;
  return (domain === VIR_FROM.RPC || domain === VIR_FROM.REMOTE) && (code === VIR_ERR.SYSTEM_ERROR || code === VIR_ERR.RPC || code === VIR_ERR.INTERNAL_ERROR || code === VIR_ERR.OPERATION_TIMEOUT);
}

/**
 * The request was never written: libvirt found the connection's socket already closed (libvirtd
 * restarted since the connection's last call). Sending it again on a fresh connection is safe.
 */
export function neverSent(err: unknown): boolean {
  return err instanceof LibvirtCallFailed && err.detail.domain === VIR_FROM.RPC && err.detail.code === VIR_ERR.INTERNAL_ERROR;
}

export function libvirtCode(err: unknown): number | undefined {
  return err instanceof LibvirtCallFailed ? err.detail.code : undefined;
}

export function translateLibvirtError(err: unknown, ctx: LibvirtErrorContext): VmdrError {
  if (err instanceof VmdrError) return err;
  if (err instanceof LibvirtCallTimedOut) return new HypervisorTimedOut(`${ctx.operation} (${err.procedure})`, ctx.host, err.timeoutMs, { vm: ctx.vm, cause: err });
  if (!(err instanceof LibvirtCallFailed)) {
    return new HypervisorOperationFailed(ctx.operation, ctx.host, err instanceof Error ? err.message : String(err), { vm: ctx.vm, cause: err });
  }
  const { code, message } = err.detail;
  if (ctx.operation === 'connect' && (code === VIR_ERR.INVALID_ARG || code === VIR_ERR.NO_CONNECT)) return new HypervisorUriInvalid(ctx.host, message, err);
  if (isConnectionFailure(err)) return new HypervisorUnreachable(ctx.host, message, err, { vm: ctx.vm, ...(ctx.operation === 'connect' ? {} : { operation: ctx.operation }) });
  switch (code) {
    case VIR_ERR.NO_DOMAIN:
      return new VmNotFound(ctx.vm ?? '?', ctx.host, err);
    case VIR_ERR.NO_NETWORK:
      return new NetworkNotFound(ctx.network ?? '?', ctx.host, err);
    case VIR_ERR.DOM_EXIST:
      return new VmAlreadyExists(ctx.vm ?? '?', ctx.host, err);
    case VIR_ERR.XML_ERROR:
    case VIR_ERR.XML_DETAIL:
    case VIR_ERR.XML_INVALID_SCHEMA:
    case VIR_ERR.CONFIG_UNSUPPORTED: {
      const what = ctx.vm !== undefined ? `VM ${JSON.stringify(ctx.vm)}` : ctx.network !== undefined ? `network ${JSON.stringify(ctx.network)}` : 'an object';
      return new DefinitionRejected(what, ctx.host, message.replace(/\s*\n[\s\S]*$/, ''), { vm: ctx.vm, network: ctx.network }, err);
    }
    case VIR_ERR.AGENT_UNRESPONSIVE:
    case VIR_ERR.AGENT_UNSYNCED:
      return new GuestAgentUnavailable(ctx.vm ?? '?', ctx.host, 'not-answering', message, err);
    case VIR_ERR.ARGUMENT_UNSUPPORTED:
      if (ctx.agent) return new GuestAgentUnavailable(ctx.vm ?? '?', ctx.host, 'not-configured', message, err);
  }
  return new HypervisorOperationFailed(ctx.operation, ctx.host, message, { vm: ctx.vm, cause: err });
}
