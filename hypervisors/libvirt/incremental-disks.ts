/**
 * Which disks an incremental backup from `since` reads by bitmap, and why not the others. Asked
 * per disk because libvirt refuses a whole incremental backup for one disk without the bitmap
 * ("missing or broken bitmap ... for disk 'vdc'"), which used to turn every disk's cycle into a
 * hash resync: now a disk that joined the VM after `since` is copied whole, alone
 * (`backupmode='full'`), and a raw disk whose in-memory bitmap is gone is compared by hashes,
 * while the other disks stay incremental.
 */
import type { BackupExport } from '../types.js';
import type { RawDiskNode } from './transient-bitmaps.js';
import { at, childElements, element, parseLibvirtXml } from './xml.js';

export interface BackupDisk {
  target: string;
  image: string;
  format: 'qcow2' | 'raw';
  /** libvirt's `index` of the source in the live XML: it names the disk's QEMU nodes. */
  index?: string;
}

/** How a disk of the backup is read. */
export interface DiskRead {
  disk: BackupDisk;
  /** Its changes come from the transient bitmap of `since` (a raw disk, transient-bitmaps.ts). */
  transient?: true;
  untracked?: BackupExport['untracked'];
}

/** The disks a checkpoint's XML names, and those of them it holds a bitmap of. */
export function checkpointDisks(xml: string): { present: Set<string>; bitmaps: Set<string> } {
  const disks = childElements(at(parseLibvirtXml(xml, 'checkpoint XML'), 'disks') ?? element('disks'), 'disk');
  return {
    present: new Set(disks.map((d) => d.attrs.name ?? '')),
    bitmaps: new Set(disks.filter((d) => d.attrs.checkpoint === 'bitmap').map((d) => d.attrs.name ?? '')),
  };
}

/** Per disk: by libvirt's bitmap, by a transient bitmap, or untracked with the reason. */
export function readsFrom(disks: BackupDisk[], since: string, sinceDisks: ReturnType<typeof checkpointDisks>, raw: RawDiskNode[]): DiskRead[] {
  return disks.map((disk) => {
    const name = disk.target;
    if (!sinceDisks.present.has(name)) {
      return { disk, untracked: { plan: 'full', reason: `disk ${name} joined the VM after checkpoint ${since}: copied whole` } };
    }
    if (disk.format === 'raw') {
      if (raw.find((r) => r.target === name)?.bitmaps.has(since)) return { disk, transient: true };
      return {
        disk,
        untracked: {
          plan: 'resync',
          reason: `disk ${name} is raw and its dirty bitmap of checkpoint ${since}, kept in QEMU's memory, is gone (QEMU restarted since: VM restart, crash or host restart): compared by hashes`,
        },
      };
    }
    if (sinceDisks.bitmaps.has(name)) return { disk };
    return { disk, untracked: { plan: 'resync', reason: `checkpoint ${since} holds no bitmap of disk ${name}: compared by hashes` } };
  });
}
