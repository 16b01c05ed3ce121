/**
 * Placeholder until vs-disks' boot-disks.ts is merged (same signatures): materializing a point's
 * disks as VMDKs on a datastore.
 */
import { Unsupported } from '../errors.js';
import type { BootDisk, BootDisksRequest, TaskOptions } from '../types.js';
import type { VsphereSession } from './session.js';

export interface DiskPlace {
  datacenter: string;
  datastore: string;
  folder: string;
}

export async function materializePoint(_session: VsphereSession, _place: DiskPlace, _request: BootDisksRequest, _task?: TaskOptions): Promise<BootDisk[]> {
  throw new Unsupported('materializing a recovery point as VMDKs (vs-disks)', 'vsphere');
}

export async function removeMaterialized(_session: VsphereSession, _place: DiskPlace, _request: BootDisksRequest): Promise<void> {
  throw new Unsupported('removing materialized boot disks (vs-disks)', 'vsphere');
}
