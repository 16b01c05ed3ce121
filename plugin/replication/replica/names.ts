/** Protection and disk names become directory names on the DR host: refuse anything that could leave the storage directory. */
import { VmdrError } from '../../../hypervisors/errors.js';

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

export function checkName(kind: 'protection' | 'disk', name: string): void {
  if (!SAFE.test(name)) throw new InvalidReplicaName(kind, name);
}
