/**
 * The few qemu-img operations the replica store needs, each one argv array (never a shell string)
 * and each failure an ImageOperationFailed carrying qemu-img's own last line.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ImageOperationFailed } from './errors.js';

const exec = promisify(execFile);

export interface ImageInfo {
  format: string;
  virtualSize: number;
  backingFile?: string;
}

/** Runs qemu-img; `cwd` resolves relative names (the replica chain's bare backing file names). */
export async function qemuImg(operation: string, file: string, args: string[], options: { cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await exec('qemu-img', args, { cwd: options.cwd, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? '').trim();
    const detail = stderr.split('\n').pop()?.replace(/^qemu-img: /, '') || (err as Error).message;
    throw new ImageOperationFailed(operation, file, detail, err);
  }
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
