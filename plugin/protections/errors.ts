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
