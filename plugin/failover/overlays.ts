/**
 * A VM booted from a recovery point never writes into the replica: each disk gets a new qcow2
 * overlay on top of the point's image, in the same disk directory (so the backing name is a bare
 * file name, as in the chain). The replica store only ever deletes point-N.qcow2 files, so these
 * overlays are left alone by its recovery; the failover that made them removes them. The VM runs
 * as the hypervisor's user, which is let through to them (replica/access.ts).
 */
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { letHypervisorReach } from '../replication/replica/access.js';
import { createQcow2, removeFile } from '../replication/replica/images.js';
import type { ChosenPoint } from './recovery-point.js';

export interface BootDisk {
  target: string;
  path: string;
  format: 'qcow2';
}

export function overlayPaths(point: ChosenPoint, name: string): BootDisk[] {
  return point.disks.map((d) => ({ target: d.disk, path: join(dirname(d.image), `${name}.qcow2`), format: 'qcow2' as const }));
}

/**
 * Makes the overlays that are missing (an existing one may already hold what a booted guest
 * wrote), for a VM of `bootsOn.adapter` to boot: protection `protection` in site storage `storage`.
 */
export async function createOverlays(point: ChosenPoint, name: string, bootsOn: { adapter: HypervisorAdapter; storage: string; protection: string }): Promise<BootDisk[]> {
  const disks = overlayPaths(point, name);
  for (const [i, disk] of disks.entries()) {
    if (existsSync(disk.path)) continue;
    const source = point.disks[i]!;
    await createQcow2(disk.path, source.sizeBytes, basename(source.image));
  }
  await letHypervisorReach(bootsOn.storage, bootsOn.protection, await bootsOn.adapter.imageUser());
  return disks;
}

export async function removeOverlays(disks: { path: string }[]): Promise<void> {
  for (const d of disks) await removeFile(d.path);
}
