import { VmdrError } from '../../hypervisors/errors.js';

/**
 * The VM the config names as a protection's source is another machine (another UUID) than the one
 * its recovery points are of: a VM was removed and another defined under its name, as when a
 * customer's server is reinstalled. Nothing is synced until the operator says which it is.
 */
export class SourceIdentityChanged extends VmdrError {
  constructor(protection: string, vm: string, recorded: string, found: string) {
    super(
      'SOURCE_IDENTITY_CHANGED',
      `protection "${protection}": source VM "${vm}" is now UUID ${found}, not UUID ${recorded} whose recovery points it holds; nothing was synced`,
      {
        subject: { protection, vm, recorded, found },
        remedy: `if the new VM replaces the old one, run \`vmdr protect ${protection} --replace-source\`: the old points stay, pinned`,
      },
    );
  }
}

export class ProtectionExists extends VmdrError {
  constructor(protection: string, file: string) {
    super('PROTECTION_EXISTS', `${file}: protection "${protection}" already exists`, { subject: { protection, file } });
  }
}

/**
 * A protection a plan starts, or that a failover holds or has failed over, is not removed: the plan
 * would name a VM it cannot start, and the failed-over VM would lose the record of where it runs
 * from. Nothing was changed.
 */
export class ProtectionInUse extends VmdrError {
  constructor(protection: string, why: string, remedy: string) {
    super('PROTECTION_IN_USE', `protection "${protection}" ${why}`, { subject: { protection }, remedy });
  }
}
