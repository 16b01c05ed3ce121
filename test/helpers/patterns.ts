/**
 * Byte patterns a test writes into a running guest's disk through QEMU's block layer (so the dirty
 * bitmap sees them) and then expects in a replica's image, read with qemu-io the way an operator
 * would check one.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Writes `pattern` (a byte, "0xcd") to the VM's virtio disk number `disk` at [offset, offset+length). */
export async function hmpWrite(vm: string, disk: number, pattern: string, offset: number, length: number, uri = 'qemu:///system'): Promise<void> {
  const { stdout } = await exec('virsh', ['-c', uri, 'qemu-monitor-command', vm, '--hmp',
    `qemu-io -d /machine/peripheral/virtio-disk${disk}/virtio-backend "write -P ${pattern} ${offset} ${length}"`]);
  assert.doesNotMatch(stdout, /error|failed/i, stdout);
}

/** Resolves when `image` holds `pattern` at [offset, offset+length); rejects with qemu-io's words otherwise. */
export async function assertPattern(image: string, pattern: string, offset: number, length: number): Promise<void> {
  const { stdout } = await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P ${pattern} ${offset} ${length}`, image]).catch((err: { stdout?: string; stderr?: string }) => {
    throw new assert.AssertionError({ message: `${image} lacks ${pattern} at ${offset}+${length}: ${err.stdout ?? ''}${err.stderr ?? ''}` });
  });
  assert.doesNotMatch(stdout, /Pattern verification failed/, `${image} lacks ${pattern} at ${offset}+${length}`);
}

/** Resolves when the two images hold the same bytes (a live source disk may be one); rejects with qemu-img's words. */
export async function compareImages(a: string, b: string): Promise<void> {
  await exec('qemu-img', ['compare', '-U', a, b]).catch((err: { stdout?: string }) => {
    throw new assert.AssertionError({ message: `${a} and ${b} differ: ${err.stdout ?? ''}` });
  });
}

/** Flushes QEMU's own caches (qcow2 metadata too) of virtio disk number `disk`, so another reader of the source image sees it all. */
export async function hmpFlush(vm: string, disk: number, uri = 'qemu:///system'): Promise<void> {
  await exec('virsh', ['-c', uri, 'qemu-monitor-command', vm, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk${disk}/virtio-backend "flush"`]);
}

/**
 * Runs `work` with the guest paused, so nothing it writes lands between a sync's checkpoint and
 * the comparison of source and replica: the source disk is then the checkpoint's state.
 */
export async function paused<T>(vm: string, work: () => Promise<T>, uri = 'qemu:///system'): Promise<T> {
  await exec('virsh', ['-c', uri, 'suspend', vm]);
  try {
    return await work();
  } finally {
    await exec('virsh', ['-c', uri, 'resume', vm]);
  }
}
