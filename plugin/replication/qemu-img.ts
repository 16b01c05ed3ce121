/**
 * The few qemu-img operations the replica store needs, run through the one qemu-img runner
 * (hypervisors/qemu-img.ts, which the libvirt adapter shares).
 */
import { imageInfo, qemuImg } from '../../hypervisors/qemu-img.js';

export { imageInfo, type ImageInfo } from '../../hypervisors/qemu-img.js';

export async function createImage(file: string, options: { sizeBytes: number; format?: 'qcow2' | 'raw'; backing?: string }): Promise<void> {
  const format = options.format ?? 'qcow2';
  const args = ['create', '-q', '-f', format];
  if (options.backing) args.push('-b', options.backing, '-F', (await imageInfo(options.backing)).format);
  args.push(file, String(options.sizeBytes));
  await qemuImg('create image', file, args);
}

/** Copies an image (all of it, sparse), e.g. to pre-seed a replica from an offline disk. */
export async function copyImage(from: string, to: string, format: 'qcow2' | 'raw' = 'qcow2'): Promise<void> {
  await qemuImg('copy image', from, ['convert', '-q', '-O', format, from, to]);
}
