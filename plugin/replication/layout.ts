/**
 * Where a protection's replica lives on its DR site. One directory per protection, one per disk
 * inside it; the base image of a disk is what the pre-staged target VM is defined on.
 */
import { join } from 'node:path';

/** The replica's images are qcow2 (a chain of overlays needs backing files): the base too. */
export const REPLICA_IMAGE_FORMAT = 'qcow2';

export function protectionDir(storage: string, protection: string): string {
  return join(storage, protection);
}

export function diskDir(storage: string, protection: string, disk: string): string {
  return join(protectionDir(storage, protection), disk);
}

export function baseImage(storage: string, protection: string, disk: string): string {
  return join(diskDir(storage, protection, disk), 'base.qcow2');
}

export function serialLog(storage: string, protection: string): string {
  return join(protectionDir(storage, protection), 'console.log');
}
