/** Names of the replica's files inside a disk directory; the only names recovery may ever delete. */
import { readdir } from 'node:fs/promises';

export const BASE_IMAGE = 'base.qcow2';
const POINT_FILE = /^point-(\d+)\.qcow2$/;

export function pointFileName(seq: number): string {
  return `point-${seq}.qcow2`;
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

export async function pointFilesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile() && isPointFile(e.name)).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
