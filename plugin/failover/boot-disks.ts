/**
 * A VM booted from a recovery point never writes into the replica: the DR site's adapter prepares
 * boot disks on top of the point's images (prepareBootDisks), named after the boot so that a
 * resumed step finds them again and the run that made them releases them. They live in the
 * replica's directories, whose permissions are the replica's business: the VM runs as the
 * hypervisor's user, which is let through to them (replica/access.ts).
 */
import type { BootDisk, HypervisorAdapter, PointDisk, TaskOptions } from '../../hypervisors/types.js';
import type { ReplicaOwner } from '../replication/layout.js';
import { letHypervisorReach } from '../replication/replica/access.js';
import type { ChosenPoint } from './recovery-point.js';

/** What a failover's boot is called: its boot disks carry the name (a drill's: see drill.ts). */
export function failoverBoot(run: string): string {
  return `failover-${run}`;
}

export function pointDisks(point: ChosenPoint): PointDisk[] {
  return point.disks.map((d) => ({ target: d.disk, image: d.image, sizeBytes: d.sizeBytes }));
}

/**
 * Prepares `boot`'s disks on `point` for the replica of `protection` in site storage `storage`; with
 * `vm`, that VM's disks are pointed at them (and its labels set to `labels`, in the same change).
 * `task`: where the disks are copied (a hypervisor that cannot open this host's files), the copy's
 * progress in bytes and its abort.
 */
export async function prepareBootDisks(
  adapter: HypervisorAdapter,
  point: ChosenPoint,
  boot: string,
  at: { storage: string; protection: ReplicaOwner; vm?: string; labels?: Record<string, string> },
  task: TaskOptions = {},
): Promise<BootDisk[]> {
  const disks = await adapter.prepareBootDisks({ boot, disks: pointDisks(point), ...(at.vm ? { vm: at.vm } : {}), ...(at.labels ? { labels: at.labels } : {}) }, task);
  await letHypervisorReach(at.storage, at.protection, await adapter.imageUser());
  return disks;
}

export function releaseBootDisks(adapter: HypervisorAdapter, point: ChosenPoint, boot: string): Promise<void> {
  return adapter.releaseBootDisks({ boot, disks: pointDisks(point) });
}
