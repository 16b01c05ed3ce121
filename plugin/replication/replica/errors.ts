import { VmdrError } from '../../../hypervisors/errors.js';

/** The protection has no recovery point with that id. */
export class RecoveryPointNotFound extends VmdrError {
  constructor(protection: string, point: string) {
    super('RECOVERY_POINT_NOT_FOUND', `protection "${protection}" has no recovery point ${point}`, {
      subject: { protection, point },
      remedy: `list its points with \`vmdr points ${protection}\``,
    });
  }
}

/** Another writer (a pending point, a retention merge, a recovery) holds the protection's replica. */
export class ReplicaBusy extends VmdrError {
  constructor(protection: string, detail: string) {
    super('REPLICA_BUSY', `replica of protection "${protection}" is busy: ${detail}`, { subject: { protection } });
  }
}

/**
 * A pending point's lease ended before commit (it expired while the process stalled, and another
 * writer may have taken the replica): nothing was committed; the cycle must be repeated.
 */
export class ReplicaLeaseLost extends VmdrError {
  constructor(protection: string, seq: number) {
    super('REPLICA_LEASE_LOST', `pending point ${seq} of protection "${protection}" lost its lease before commit; nothing was committed`, {
      subject: { protection, seq },
      userError: false,
    });
  }
}

/** The pending point was already committed or discarded. */
export class PendingPointClosed extends VmdrError {
  constructor(protection: string, seq: number, state: string) {
    super('PENDING_POINT_CLOSED', `pending point ${seq} of protection "${protection}" is already ${state}`, {
      subject: { protection, seq },
      userError: false,
    });
  }
}

/** A pending overlay vanished before commit (deleted by hand or by a writer that took over). */
export class OverlayMissing extends VmdrError {
  constructor(protection: string, file: string, cause?: unknown) {
    super('OVERLAY_MISSING', `overlay ${file} of protection "${protection}" is missing; nothing was committed`, {
      subject: { protection, file },
      cause,
      userError: false,
    });
  }
}

/**
 * The protection was failed over: its target runs as production and the replica must not move
 * under it. Replication resumes only through a failback or a revert (split-brain guard).
 */
export class ProtectionFailedOver extends VmdrError {
  constructor(protection: string, failover: string | null) {
    super('PROTECTION_FAILED_OVER', `protection "${protection}" was failed over${failover ? ` (${failover})` : ''}; its replica takes no new recovery point`, {
      subject: { protection, ...(failover ? { failover } : {}) },
      remedy: `bring it home with \`vmdr failback ${protection}\`, or discard the DR side with \`vmdr failover ${protection} --revert\``,
    });
  }
}
