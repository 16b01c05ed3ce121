/**
 * qemu-img, run the one way vmdr runs it: an argv array (never a shell string), and a failure an
 * ImageOperationFailed carrying qemu-img's own last line. It sits beside types.ts, like
 * qemu-nbd.ts, because both sides need it and adapters may not import plugin/: the replica store
 * builds its chain with it, the libvirt adapter the boot disks on top of a recovery point and the
 * disk sizes of a running VM (disk-capacities.ts).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ImageOperationFailed } from './errors.js';

const exec = promisify(execFile);

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

export interface ImageInfo {
  format: string;
  virtualSize: number;
  backingFile?: string;
}

/**
 * What an image's header says, read without taking its locks (-U): the image may be open in a
 * running QEMU. `format`, when known, is used instead of probing: a raw image whose guest wrote a
 * qcow2 header into it must not be read as one.
 */
export async function imageInfo(file: string, options: { format?: string } = {}): Promise<ImageInfo> {
  const info = JSON.parse(await qemuImg('inspect image', file, ['info', '--output=json', '-U', ...(options.format ? ['-f', options.format] : []), file])) as {
    format: string;
    'virtual-size': number;
    'backing-filename'?: string;
  };
  return { format: info.format, virtualSize: info['virtual-size'], backingFile: info['backing-filename'] };
}
