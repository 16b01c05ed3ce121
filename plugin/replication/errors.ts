import { VmdrError } from '../../hypervisors/errors.js';

// The class lives beside the adapter interface: the libvirt adapter's offline export raises it too.
export { ImageOperationFailed } from '../../hypervisors/errors.js';

/**
 * The source VM's backup export failed under a cycle (the VM destroyed, QEMU gone): the receiver
 * saw a cut stream and kept the replica at its last point. `why` is in the user's words.
 */
export class BackupExportLost extends VmdrError {
  constructor(vm: string, host: string, why: string, cause: unknown) {
    super('BACKUP_EXPORT_LOST', `the backup export of VM ${JSON.stringify(vm)} on ${host} failed while the cycle shipped: ${why}; nothing was committed`, {
      subject: { vm, host },
      cause,
    });
  }
}

/** An operator paused the protection's replication: no sync until it is resumed. */
export class ProtectionPaused extends VmdrError {
  constructor(protection: string, by: string, at: Date) {
    super('PROTECTION_PAUSED', `replication of "${protection}" is paused (by ${by}, ${at.toISOString()})`, {
      subject: { protection },
      remedy: `\`vmdr resume ${protection}\` first`,
    });
  }
}

/**
 * The source VM was fenced for the failover of another protection of it (fan-out: one VM, a copy
 * on each of several DR sites). The VM's writes go on at that DR site now: shipping the fenced
 * source's disks to this copy would only make it a second, stale line of the same machine.
 */
export class SourceFencedForOtherCopy extends VmdrError {
  constructor(protection: string, vm: string, by: { protection: string; failover: string }) {
    super(
      'SOURCE_FENCED_FOR_OTHER_COPY',
      `source VM ${JSON.stringify(vm)} is fenced: protection "${by.protection}" failed over (${by.failover || 'failover unknown'}); "${protection}" takes no point from it until that failover is failed back or reverted`,
      { subject: { protection, vm, fencedBy: by.protection, failover: by.failover }, remedy: `\`vmdr failback ${by.protection}\` or \`vmdr failover ${by.protection} --revert\`` },
    );
  }
}

/**
 * A consistency group's member is not running (shut off, paused, gone) when its cycle starts:
 * with `onMemberDown: fail` at once, with `wait` once the wait is over. No member was captured.
 */
export class GroupMemberDown extends VmdrError {
  constructor(group: string, down: { protection: string; why: string }[], waitedMs?: number) {
    const waited = waitedMs === undefined ? '' : ` (waited ${Math.round(waitedMs / 1000)} s)`;
    super('GROUP_MEMBER_DOWN', `consistency group "${group}": ${down.map((d) => `member "${d.protection}": ${d.why}`).join('; ')}${waited}; no group point was taken`, {
      subject: { group, protection: down[0]?.protection },
      remedy: 'start the member, or take it out of the group',
    });
  }
}

/**
 * A consistency group's cycle did not give every member a point of its instant: no group point.
 * The members that committed keep their own points; `members` says how each went.
 */
export class GroupCycleFailed extends VmdrError {
  constructor(
    group: string,
    readonly members: { protection: string; point?: string; error?: { code: string; message: string } }[],
    readonly windowMs?: number,
    /** By member: the error it failed with, whole (a failed-over member's says by which failover). */
    readonly causes: ReadonlyMap<string, unknown> = new Map(),
  ) {
    const failed = members.filter((m) => m.error);
    super('GROUP_CYCLE_FAILED', `consistency group "${group}": no group point: ${failed.map((m) => `member "${m.protection}" failed (${m.error!.message})`).join('; ')}${members.some((m) => m.point) ? `; ${members.filter((m) => m.point).map((m) => `"${m.protection}" committed ${m.point} alone`).join(', ')}` : ''}`, {
      subject: { group, protection: failed[0]?.protection },
    });
  }
}

/** Another cycle of the consistency group (the daemon's loop, or `vmdr sync --group`) held it longer than this one waited (group-lock.ts). */
export class GroupCycleBusy extends VmdrError {
  constructor(group: string, lockFile: string, holder: string | undefined, waitedMs: number) {
    super('GROUP_CYCLE_BUSY', `consistency group "${group}": another cycle of the group runs${holder ? ` (process ${holder})` : ''}; waited ${Math.round(waitedMs / 1000)} s for it to end`, {
      subject: { group, lockFile, holder },
      remedy: 'vmdr serve runs the group\'s cycles by itself: its next group point comes without asking; or try again later',
    });
  }
}
