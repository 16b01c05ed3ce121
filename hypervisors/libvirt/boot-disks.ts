/**
 * Boot disks on libvirt: a qcow2 overlay per disk beside the recovery point's image, named after
 * the boot (`failover-<run>.qcow2`). Its backing file is the point image's bare file name, which
 * QEMU resolves relative to the overlay, as in the replica chain: the directory can move, and
 * after a failback the replica can take the overlay over as its newest point. The point's image
 * is only ever read.
 */
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { checkBootName } from '../boot-name.js';
import { ImageOperationFailed } from '../errors.js';
import { qemuImg } from '../qemu-img.js';
import type { BootDisk, BootDisksRequest, PointDisk } from '../types.js';

export function overlayPath(disk: PointDisk, boot: string): string {
  return join(dirname(disk.image), `${boot}.qcow2`);
}

/**
 * Makes the overlays that are missing. An existing one may hold what a booted guest wrote and is
 * kept, once qemu-img says it is an overlay of this very image: a file of that name that is not
 * (the point's image itself, another point) would be written by the VM, so it is refused.
 */
export async function createOverlays(request: BootDisksRequest): Promise<BootDisk[]> {
  checkBootName(request.boot);
  const made: BootDisk[] = [];
  for (const disk of request.disks) {
    const path = overlayPath(disk, request.boot);
    if (await exists(path)) {
      await checkOverlayOf(path, disk.image, 'keep boot overlay');
    } else {
      // Under another name until whole: a run killed inside qemu-img leaves no half overlay to keep.
      const part = `${path}.part`;
      const args = ['create', '-q', '-f', 'qcow2', '-b', basename(disk.image), '-F', 'qcow2', basename(part), String(disk.sizeBytes)];
      await qemuImg('create a boot overlay on', disk.image, args, { cwd: dirname(path) });
      await fsync(part);
      await rename(part, path);
    }
    made.push({ target: disk.target, path, format: 'qcow2' });
  }
  return made;
}

/** Removes only overlays of the point's images: a release never deletes a replica file. */
export async function removeOverlays(request: BootDisksRequest): Promise<void> {
  checkBootName(request.boot);
  for (const disk of request.disks) {
    const path = overlayPath(disk, request.boot);
    await rm(`${path}.part`, { force: true });
    if (!(await exists(path))) continue;
    await checkOverlayOf(path, disk.image, 'remove boot overlay');
    await rm(path);
  }
}

async function checkOverlayOf(path: string, image: string, operation: string): Promise<void> {
  const info = JSON.parse(await qemuImg('inspect boot overlay', path, ['info', '--output=json', '-U', path])) as { format?: string; 'backing-filename'?: string };
  if (info.format !== 'qcow2' || info['backing-filename'] !== basename(image)) {
    throw new ImageOperationFailed(operation, path, `it exists and is not an overlay of ${basename(image)}; it is left as it is`);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? false : Promise.reject(err)),
  );
}

async function fsync(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
