/** What stops a failover, each naming the protection, VM or point it concerns. */
import { VmdrError } from '../../hypervisors/errors.js';

/** Another run holds the protection (it is running now, or it died and was not resumed). */
export class FailoverInProgress extends VmdrError {
  constructor(protection: string, failover: string, live: boolean) {
    super(
      'FAILOVER_IN_PROGRESS',
      live
        ? `protection "${protection}" is being failed over by ${failover} right now`
        : `failover ${failover} of protection "${protection}" stopped half way`,
      {
        subject: { protection, failover },
        remedy: live ? 'wait for it to end' : 'continue it with --resume, or undo it with --revert',
      },
    );
  }
}

export class NothingToResume extends VmdrError {
  constructor(what: string) {
    super('NOTHING_TO_RESUME', `no unfinished failover of ${what} to resume`, { subject: {} });
  }
}

export class NoRecoveryPoint extends VmdrError {
  constructor(protection: string, detail = 'has no recovery point yet', remedy = `sync it first with \`vmdr protect ${protection}\` or \`vmdr sync ${protection}\``) {
    super('NO_RECOVERY_POINT', `protection "${protection}" ${detail}`, { subject: { protection }, remedy });
  }
}

/** Unplanned failover while the source still runs: two copies of one server would be live. */
export class SourceStillRunning extends VmdrError {
  constructor(protection: string, vm: string, host: string) {
    super('SOURCE_STILL_RUNNING', `source VM "${vm}" of protection "${protection}" is still running on ${host}`, {
      subject: { protection, vm, host },
      remedy: 'use --planned to move it without data loss, or --force to fence (power off) the source first',
    });
  }
}

/** The pre-staged target VM cannot take the failover as it is. */
export class TargetNotReady extends VmdrError {
  constructor(protection: string, vm: string, host: string, detail: string, remedy?: string) {
    super('TARGET_NOT_READY', `target VM "${vm}" of protection "${protection}" on ${host} ${detail}`, {
      subject: { protection, vm, host },
      ...(remedy ? { remedy } : {}),
    });
  }
}

/** A MAC the failover would give a NIC is already on a VM of the DR host. */
export class MacInUse extends VmdrError {
  constructor(protection: string, mac: string, vm: string, host: string) {
    super('MAC_IN_USE', `MAC ${mac} of protection "${protection}" is already used by VM "${vm}" on ${host}`, {
      subject: { protection, mac, vm, host },
    });
  }
}

export class NotFailedOver extends VmdrError {
  constructor(protection: string, wanted: string) {
    super('NOT_FAILED_OVER', `protection "${protection}" is not failed over, so there is nothing to ${wanted}`, { subject: { protection } });
  }
}

export class AlreadyFailedOver extends VmdrError {
  constructor(protection: string, failover: string | null) {
    super('ALREADY_FAILED_OVER', `protection "${protection}" is already failed over${failover ? ` (${failover})` : ''}`, {
      subject: { protection },
      remedy: `bring it home with \`vmdr failback ${protection}\`, or undo it with \`vmdr failover ${protection} --revert\``,
    });
  }
}

/** A run stopped: the step and VM where, and what the step threw. */
export class FailoverStepFailed extends VmdrError {
  constructor(failover: string, protection: string, step: string, cause: unknown) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super('FAILOVER_STEP_FAILED', `failover ${failover}: ${protection}: step "${step}" failed: ${detail}`, {
      subject: { failover, protection, step, ...(cause instanceof VmdrError ? { cause: cause.code } : {}) },
      cause,
      ...(cause instanceof VmdrError && cause.remedy ? { remedy: cause.remedy } : {}),
    });
  }
}

/**
 * Fan-out: the source VM is fenced for the failover of another protection of it (its copy on
 * another DR site). Its writes go on at that copy: booting this one too makes two live copies.
 */
export class OtherCopyFailedOver extends VmdrError {
  constructor(protection: string, vm: string, by: { protection: string; failover: string }) {
    super('OTHER_COPY_FAILED_OVER', `source VM "${vm}" of protection "${protection}" is fenced for the failover of protection "${by.protection}" (${by.failover || 'failover unknown'}): that copy is the live one`, {
      subject: { protection, vm, fencedBy: by.protection, failover: by.failover },
      remedy: `fail "${by.protection}" back or revert it first; --force boots this copy anyway, beside that one`,
    });
  }
}
