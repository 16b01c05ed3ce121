/** Protection and disk names become directory names on the DR host: refuse anything that could leave the storage directory. */
import { VmdrError } from '../../../hypervisors/errors.js';
import { TENANTS_DIR } from '../layout.js';

const SAFE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class InvalidReplicaName extends VmdrError {
  constructor(kind: 'protection' | 'disk', name: string) {
    super('INVALID_REPLICA_NAME', `${kind} name ${JSON.stringify(name)} cannot name a replica directory: use letters, digits, ".", "_" and "-"`, {
      subject: { [kind]: name },
    });
  }
}

export function isValidName(name: string): boolean {
  return SAFE.test(name);
}

/** A protection's name is also a directory beside the tenants' one (layout.ts), which it must not be. */
export function isValidProtectionName(name: string): boolean {
  return SAFE.test(name) && name !== TENANTS_DIR;
}

export function checkName(kind: 'protection' | 'disk', name: string): void {
  if (!(kind === 'protection' ? isValidProtectionName(name) : SAFE.test(name))) throw new InvalidReplicaName(kind, name);
}
