/**
 * A writer on one disk of a shut-off VM: its image served writable by qemu-nbd
 * (hypervisors/qemu-nbd.ts) on this host, which the adapter has checked is the libvirt host.
 * Writeback cache with the caller's explicit flush, as the receiver writes recovery points: a
 * flush is the only moment written data is promised on disk.
 */
import { DiskNotFound } from '../errors.js';
import { serveImageOverNbd } from '../qemu-nbd.js';
import type { DiskWriter, VmInfo } from '../types.js';

export async function openDiskWriter(uri: string, vm: VmInfo, disk: string): Promise<DiskWriter> {
  const found = vm.disks.find((d) => d.target === disk && d.device === 'disk' && !d.identitySeed && d.path);
  if (!found) throw new DiskNotFound(vm.name, uri, disk);
  const server = await serveImageOverNbd(found.path!, {
    format: found.format === 'raw' ? 'raw' : 'qcow2',
    extraArgs: ['--cache=writeback', '--discard=unmap', '--detect-zeroes=off'],
  });
  return { disk, listen: server.listen, exportName: '', close: server.stop };
}
