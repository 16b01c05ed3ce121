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
