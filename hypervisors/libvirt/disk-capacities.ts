/**
 * The virtual sizes of a VM's disks, read without ever putting a running VM at risk.
 *
 * For a VM that runs, libvirt answers virDomainGetBlockInfo (like `virsh domblkinfo` and the block
 * group of `virsh domstats`) with QMP query-named-block-nodes, which describes every block node
 * QEMU holds, including the scratch qcow2 that a pull backup's begin is still creating with
 * blockdev-create. That node is half open until its header has been read, and QEMU 7.2 (Debian 12)
 * aborts the whole VM on it ("qcow2_get_specific_info: Assertion `false' failed"): a status read
 * during a sync's begin killed the source VM (test/lab/status-during-backup.test.ts).
 *
 * So a running VM's sizes come from its image files (qemu-img info -U, which opens nothing in
 * QEMU and takes none of its locks) where they are files on this host. Where they are not (a
 * remote URI, a network disk, an image qemu-img cannot read) libvirt is asked only while the VM
 * has no job (a backup, a migration); a size that cannot be read safely is left out, as for a disk
 * without a medium. A shut-off VM has no QEMU: libvirt reads its files itself.
 */
import { imageInfo } from '../qemu-img.js';
import type { VmInfo } from '../types.js';
import { VIR_DOMAIN_JOB } from './api/codes.js';
import type { LibvirtConnection } from './connection.js';

export async function diskCapacities(conn: LibvirtConnection, vm: VmInfo): Promise<Record<string, number>> {
  const sized = vm.disks.filter((d) => d.path);
  if (sized.length === 0) return {};
  const askLibvirt = (targets: string[]) => conn.call({ operation: 'read disk sizes', vm: vm.name }, 'diskCapacities', vm.id, targets);
  if (vm.powerState === 'shutoff') return askLibvirt(sized.map((d) => d.target));

  const local = !new URL(conn.uri).hostname;
  const sizes: Record<string, number> = {};
  await Promise.all(
    sized.map(async (d) => {
      if (!local || !d.path!.startsWith('/')) return;
      const info = await imageInfo(d.path!, d.format ? { format: d.format } : {}).catch(() => undefined);
      if (info) sizes[d.target] = info.virtualSize;
    }),
  );
  const unread = sized.map((d) => d.target).filter((t) => sizes[t] === undefined);
  if (unread.length === 0 || (await hasJob(conn, vm))) return sizes;
  return { ...sizes, ...(await askLibvirt(unread)) };
}

/** A job libvirt runs on the VM (a backup begins as one), or the VM is gone from under the question. */
async function hasJob(conn: LibvirtConnection, vm: VmInfo): Promise<boolean> {
  const job = await conn.call({ operation: 'read the job of', vm: vm.name }, 'jobInfo', vm.id).catch(() => undefined);
  return job === undefined || job.type === VIR_DOMAIN_JOB.BOUNDED || job.type === VIR_DOMAIN_JOB.UNBOUNDED;
}
