/** Names of the replica's files inside a disk directory; the only names recovery may ever delete. */
import { readdir } from 'node:fs/promises';

export const BASE_IMAGE = 'base.qcow2';
const POINT_FILE = /^point-(\d+)\.qcow2$/;
/** An overlay made ahead for the next point (ReplicaStore.prepareNext): never a point under this name. */
const NEXT_FILE = /^next-(\d+)\.qcow2$/;

export function pointFileName(seq: number): string {
  return `point-${seq}.qcow2`;
}

export function nextFileName(seq: number): string {
  return `next-${seq}.qcow2`;
}

export function isPointFile(name: string): boolean {
  return POINT_FILE.test(name);
}

/** Subdirectory names of `dir`, or none when it does not exist. */
export async function subdirectories(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export function pointFilesIn(dir: string): Promise<string[]> {
  return filesIn(dir, (name) => POINT_FILE.test(name));
}

/** The overlays in a disk directory: committed or not (point-N.qcow2) and made ahead (next-N.qcow2). */
export function overlayFilesIn(dir: string): Promise<string[]> {
  return filesIn(dir, (name) => POINT_FILE.test(name) || NEXT_FILE.test(name));
}

async function filesIn(dir: string, wanted: (name: string) => boolean): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile() && wanted(e.name)).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
