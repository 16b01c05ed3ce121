/**
 * The few qemu-img operations the replica store needs, run through the one qemu-img runner
 * (hypervisors/qemu-img.ts, which the libvirt adapter shares).
 */
import { qemuImg } from '../../hypervisors/qemu-img.js';

export interface ImageInfo {
  format: string;
  virtualSize: number;
  backingFile?: string;
}

export async function createImage(file: string, options: { sizeBytes: number; format?: 'qcow2' | 'raw'; backing?: string }): Promise<void> {
  const format = options.format ?? 'qcow2';
  const args = ['create', '-q', '-f', format];
  if (options.backing) args.push('-b', options.backing, '-F', (await imageInfo(options.backing)).format);
  args.push(file, String(options.sizeBytes));
  await qemuImg('create image', file, args);
}

export async function imageInfo(file: string): Promise<ImageInfo> {
  const info = JSON.parse(await qemuImg('inspect image', file, ['info', '--output=json', '-U', file])) as {
    format: string;
    'virtual-size': number;
    'backing-filename'?: string;
  };
  return { format: info.format, virtualSize: info['virtual-size'], backingFile: info['backing-filename'] };
}

/** Copies an image (all of it, sparse), e.g. to pre-seed a replica from an offline disk. */
export async function copyImage(from: string, to: string, format: 'qcow2' | 'raw' = 'qcow2'): Promise<void> {
  await qemuImg('copy image', from, ['convert', '-q', '-O', format, from, to]);
}
