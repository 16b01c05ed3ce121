import { VmdrError } from '../../hypervisors/errors.js';

/** A VM with the target's name exists but vmdr did not make it for this protection: hands off. */
export class TargetConflict extends VmdrError {
  constructor(vm: string, host: string, protection: string, owner: string | undefined) {
    const who = owner ? `it belongs to protection "${owner}"` : 'vmdr did not create it';
    super('TARGET_CONFLICT', `VM "${vm}" on ${host} cannot be the target of protection "${protection}": ${who}`, {
      subject: { vm, host, protection },
      remedy: 'choose another target name, or remove that VM yourself',
    });
  }
}

/** A DR site needs a storage directory for replicas and none is configured. */
export class SiteStorageMissing extends VmdrError {
  constructor(site: string, file: string) {
    super('SITE_STORAGE_MISSING', `${file}: site "${site}" holds replicas but has no "storage" directory`, { subject: { file, site } });
  }
}

/** An existing target needs a change (a disk added or grown) that cannot be made now. */
export class TargetInUse extends VmdrError {
  constructor(protection: string, vm: string, host: string, wanted: string, why: string, remedy: string) {
    super('TARGET_IN_USE', `cannot ${wanted} on target VM "${vm}" of protection "${protection}" on ${host}: ${why}`, {
      subject: { protection, vm, host },
      remedy,
    });
  }
}
