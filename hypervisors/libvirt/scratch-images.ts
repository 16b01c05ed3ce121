/**
 * The scratch images of a pull backup, made by vmdr before the backup begins (libvirt's
 * REUSE_EXTERNAL) rather than by libvirt inside it. Left to libvirt, QEMU creates each one with
 * a blockdev-create job, and while that job has the new qcow2 half open, any query of QEMU's block
 * nodes (virDomainGetBlockInfo, `virsh domblkinfo`, the block group of `virsh domstats` that
 * monitoring agents poll) aborts the VM on QEMU 7.2 ("qcow2_get_specific_info: Assertion `false'
 * failed"; see disk-capacities.ts). An image made here is opened by QEMU in one step.
 */
import { chmod, rm } from 'node:fs/promises';
import { imageInfo, qemuImg } from '../qemu-img.js';

/**
 * One qcow2 per backed-up disk, of that disk's virtual size (QEMU refuses a scratch of another).
 * False, and none left, when they cannot be made here (a disk's image is not readable from this
 * host, say): libvirt makes them then, as before.
 */
export async function makeScratchImages(disks: { target: string; image: string; format: string }[], targets: string[], files: string[]): Promise<boolean> {
  try {
    await Promise.all(
      targets.map(async (target, i) => {
        const disk = disks.find((d) => d.target === target);
        if (!disk) throw new Error(`no image for disk ${target}`);
        const { virtualSize } = await imageInfo(disk.image, { format: disk.format });
        await qemuImg('create scratch image', files[i]!, ['create', '-q', '-f', 'qcow2', files[i]!, String(virtualSize)]);
        // It will hold the guest's blocks as they were: customer data, before QEMU writes any.
        await chmod(files[i]!, 0o600);
      }),
    );
    return true;
  } catch {
    await Promise.all(files.map((f) => rm(f, { force: true })));
    return false;
  }
}
