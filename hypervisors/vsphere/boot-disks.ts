/**
 * Boot disks on vSphere: the replica and its points stay on the DR host (qcow2 chains where vmdr
 * runs), and a boot from a point gets each disk materialized on the target's datastore as a flat
 * VMDK, `[datastore] folder/<boot>-<target>.vmdk` (vmdk.ts), which the VM then runs on and
 * writes. The point's images are only read.
 *
 * What exists for a boot is kept, never uploaded again: once a VM ran on it, it holds what the
 * guest wrote. So "exists" must mean "whole": the extent is uploaded first under its final name,
 * then the descriptor under a temporary name (`….vmdk.part`), moved onto `<boot>-<target>.vmdk`
 * once written. A descriptor at the final name therefore always follows a whole extent; a run that
 * died before (mid-extent, or with a half descriptor) left no descriptor, and the next run uploads
 * again, replacing what it left. A descriptor that is there but does not describe this disk's
 * extent (another size, another file) is never replaced: it is refused, as libvirt refuses an
 * overlay of another image.
 */
import { ImageOperationFailed } from '../errors.js';
import { checkBootName } from '../boot-name.js';
import type { BootDisk, BootDisksRequest, PointDisk, TaskOptions } from '../types.js';
import { datastorePath, deleteFile, makeFolder, moveFile, readSmallFile, resolveDatastore, statFile, uploadFile, type DatastoreFile } from './datastore.js';
import type { VsphereSession } from './session.js';
import { extentSectors, flatExtentName, parseVmdkDescriptor, readFlatExtent, SECTOR_BYTES, vmdkDescriptor } from './vmdk.js';

/** Where a boot's disks go: a folder of a datastore (vmdr's, e.g. the target VM's own folder). */
export interface DiskPlace {
  datacenter: string;
  datastore: string;
  /** Slash-separated, relative to the datastore's root ('' is the root); made when missing. */
  folder: string;
}

interface DiskFiles {
  descriptor: DatastoreFile;
  extent: DatastoreFile;
  /** The descriptor while it is written: never opened by a VM, never taken as whole. */
  part: DatastoreFile;
}

/** The files of one disk of one boot. A guest target such as `scsi0:1` becomes `scsi0_1`. */
export function materializedFiles(place: DiskPlace, boot: string, disk: Pick<PointDisk, 'target'>): DiskFiles {
  const name = `${boot}-${disk.target.replace(/[^A-Za-z0-9._-]/g, '_')}`;
  const at = (file: string): DatastoreFile => ({ datacenter: place.datacenter, datastore: place.datastore, path: [...place.folder.split('/').filter(Boolean), file].join('/') });
  return { descriptor: at(`${name}.vmdk`), extent: at(flatExtentName(`${name}.vmdk`)), part: at(`${name}.vmdk.part`) };
}

/**
 * Materializes each disk of the point that is not there yet and returns what the VM opens, in
 * the request's order. Progress: per disk (subject.disk), bytes of its extent, phase
 * "upload disk"; a disk that is kept reports nothing. Fails with VSPHERE_DATASTORE_NOT_FOUND
 * naming a datastore the datacenter lacks, before anything is read or written.
 */
export async function materializePoint(session: VsphereSession, place: DiskPlace, request: BootDisksRequest, task: TaskOptions = {}): Promise<BootDisk[]> {
  checkBootName(request.boot);
  const dc = await resolveDatastore(session, place, task.signal);
  // The datastore's root needs no making (and MakeDirectory refuses it).
  if (place.folder.split('/').some(Boolean)) {
    await makeFolder(session, { datacenter: place.datacenter, datastore: place.datastore, path: place.folder }, { dc, signal: task.signal });
  }
  const made: BootDisk[] = [];
  for (const disk of request.disks) {
    const files = materializedFiles(place, request.boot, disk);
    if (!(await isWhole(session, files, disk, task.signal))) {
      await uploadFile(session, files.extent, () => readFlatExtent(disk.image, disk.sizeBytes), {
        signal: task.signal,
        onProgress: task.onProgress,
        phase: 'upload disk',
        subject: { disk: disk.target },
      });
      const extent = files.extent.path.split('/').pop()!;
      await uploadFile(session, files.part, Buffer.from(vmdkDescriptor({ extent, sizeBytes: disk.sizeBytes })), { signal: task.signal });
      await moveFile(session, files.part, files.descriptor, { dc, signal: task.signal });
    }
    made.push({ target: disk.target, path: datastorePath(files.descriptor), format: 'vmdk' });
  }
  return made;
}

/**
 * Deletes what materializePoint made for this boot on these disks, and only that; files already
 * gone are not an error. The descriptor goes first, so a removal that stops half way leaves
 * nothing that would be taken for a whole disk.
 */
export async function removeMaterialized(session: VsphereSession, place: DiskPlace, request: BootDisksRequest, options: { signal?: AbortSignal } = {}): Promise<void> {
  checkBootName(request.boot);
  const dc = await resolveDatastore(session, place, options.signal);
  for (const disk of request.disks) {
    const files = materializedFiles(place, request.boot, disk);
    for (const file of [files.descriptor, files.extent, files.part]) await deleteFile(session, file, { ...options, dc });
  }
}

/** True when the disk's descriptor is there and describes its whole extent, which is there too. */
async function isWhole(session: VsphereSession, files: DiskFiles, disk: PointDisk, signal?: AbortSignal): Promise<boolean> {
  const text = await readSmallFile(session, files.descriptor, { signal });
  if (text === undefined) return false;
  const sectors = extentSectors(disk.sizeBytes);
  const extentName = files.extent.path.split('/').pop()!;
  const described = parseVmdkDescriptor(text);
  const extent = described?.extents.length === 1 ? described.extents[0] : undefined;
  const refuse = (detail: string): never => {
    throw new ImageOperationFailed('keep boot disk', datastorePath(files.descriptor), `${detail}; it is left as it is`);
  };
  if (described?.createType !== 'vmfs' || extent?.file !== extentName) refuse(`it exists and is not a flat disk on ${extentName}`);
  if (extent!.sectors !== sectors) refuse(`it exists for a disk of ${extent!.sectors} sectors, not ${sectors}`);
  const stat = await statFile(session, files.extent, { signal });
  if (!stat) refuse(`its extent ${datastorePath(files.extent)} is missing`);
  // A server that gives no size is believed: the descriptor is only ever moved in after a whole extent.
  if (stat!.sizeBytes !== undefined && stat!.sizeBytes !== sectors * SECTOR_BYTES) {
    refuse(`its extent ${datastorePath(files.extent)} is ${stat!.sizeBytes} bytes, not ${sectors * SECTOR_BYTES}`);
  }
  return true;
}
