/**
 * The qemu-img operations of the replica chain that qemu-img.ts does not have. Backing file names
 * are bare file names, resolved by qemu relative to the overlay, so a replica directory can move;
 * every call therefore runs with cwd = the disk directory. Each operation is idempotent.
 */
import { open, rm } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { qemuImg } from '../../../hypervisors/qemu-img.js';

/** qemu-img run in the image's own directory, where its bare backing file name resolves. */
const qemuImgHere = (operation: string, file: string, args: string[]) => qemuImg(operation, file, args, { cwd: dirname(file) });

/** An empty qcow2 of `sizeBytes`, optionally on `backing` (a file name in the same directory). */
export async function createQcow2(file: string, sizeBytes: number, backing?: string): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2'];
  if (backing) args.push('-b', backing, '-F', 'qcow2');
  args.push(basename(file), String(sizeBytes));
  await qemuImgHere('create image', file, args);
}

/** Writes the overlay's data into its backing file and leaves the overlay as it was (repeatable). */
export async function commitIntoBacking(overlay: string): Promise<void> {
  await qemuImgHere('merge image into its backing file', overlay, ['commit', '-q', '-f', 'qcow2', '-d', basename(overlay)]);
}

/** Points the overlay at another backing file without touching data: the caller guarantees same content. */
export async function setBacking(overlay: string, backing: string): Promise<void> {
  await qemuImgHere('rebase image', overlay, ['rebase', '-q', '-f', 'qcow2', '-u', '-b', backing, '-F', 'qcow2', basename(overlay)]);
}

/**
 * Puts the overlay on another backing file and keeps what it reads: qemu-img's safe mode copies
 * into it, first, every cluster the old chain reads differently from the new one, then rewrites
 * its header. Cut short, it repeats; on the new backing already, it copies nothing.
 */
export async function rebaseKeepingContent(overlay: string, backing: string): Promise<void> {
  await qemuImgHere('merge images into the point above', overlay, ['rebase', '-q', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', basename(overlay)]);
}

export async function shrinkTo(file: string, sizeBytes: number): Promise<void> {
  await qemuImgHere('shrink image', file, ['resize', '-q', '-f', 'qcow2', '--shrink', basename(file), String(sizeBytes)]);
}

/** Grows the virtual size; what the image held reads the same, the new end reads as zeros. */
export async function growTo(file: string, sizeBytes: number): Promise<void> {
  await qemuImgHere('grow image', file, ['resize', '-q', '-f', 'qcow2', basename(file), String(sizeBytes)]);
}

/** Makes a file's data and its directory entry durable: a committed point must survive a power cut. */
export async function syncFile(file: string): Promise<void> {
  for (const path of [file, dirname(file)]) {
    const handle = await open(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

export async function removeFile(file: string): Promise<boolean> {
  try {
    await rm(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
