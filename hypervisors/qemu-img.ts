/**
 * qemu-img, run the one way vmdr runs it: an argv array (never a shell string), and a failure an
 * ImageOperationFailed carrying qemu-img's own last line. It sits beside types.ts, like
 * qemu-nbd.ts, because both sides need it and adapters may not import plugin/: the replica store
 * builds its chain with it, the libvirt adapter the boot disks on top of a recovery point.
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
