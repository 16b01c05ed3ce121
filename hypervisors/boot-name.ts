/**
 * A boot's name (`failover-<run>`, `drill-<run>`) becomes part of file names on every hypervisor
 * (libvirt's overlays beside the replica, vSphere's disks on a datastore), so both adapters refuse
 * the same names the same way before anything is made or removed.
 */
import { BootNameInvalid } from './errors.js';

const BOOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function checkBootName(boot: string): void {
  if (!BOOT_NAME.test(boot)) throw new BootNameInvalid(boot);
}
