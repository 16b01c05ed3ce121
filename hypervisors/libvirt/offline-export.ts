/**
 * A shut-off VM's disks exported read-only over NBD straight from their image files: one qemu-nbd
 * per disk (hypervisors/qemu-nbd.ts), export named after the disk, optionally with a persistent
 * bitmap's `qemu:dirty-bitmap:<name>` context. This is what a sync reads when there is no QEMU to
 * run a pull backup.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { serveImageOverNbd, type NbdImageServer } from '../qemu-nbd.js';

const exec = promisify(execFile);

export interface OfflineDisk {
  target: string;
  image: string;
  format: 'qcow2' | 'raw';
  /** A persistent bitmap of the image to export as `qemu:dirty-bitmap:<bitmap>`. */
  bitmap?: string;
}

export interface OfflineExports {
  servers: Map<string, NbdImageServer>;
  /** Stops every qemu-nbd. Safe twice. */
  stop(): Promise<void>;
}

/** Whether `image` holds persistent bitmap `name` that QEMU saved properly (not left 'in-use'). */
export async function hasUsableBitmap(image: string, name: string): Promise<boolean> {
  const { stdout } = await exec('qemu-img', ['info', '--output=json', '-U', image]);
  const info = JSON.parse(stdout) as { 'format-specific'?: { data?: { bitmaps?: { name: string; flags: string[] }[] } } };
  const bitmap = info['format-specific']?.data?.bitmaps?.find((b) => b.name === name);
  return bitmap !== undefined && !bitmap.flags.includes('in-use');
}

export async function exportImagesOffline(disks: OfflineDisk[]): Promise<OfflineExports> {
  const servers = new Map<string, NbdImageServer>();
  const stop = async () => {
    await Promise.all([...servers.values()].map((s) => s.stop()));
  };
  try {
    for (const d of disks) {
      servers.set(d.target, await serveImageOverNbd(d.image, { format: d.format, readOnly: true, exportName: d.target, ...(d.bitmap ? { bitmap: d.bitmap } : {}) }));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { servers, stop };
}
