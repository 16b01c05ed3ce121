/**
 * The lab's stand-in for production: the source VMs a config protects, defined and running on an
 * isolated network, each booting a disk whose marker names the VM. Real sites already have their
 * VMs; only the lab makes them.
 */
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { HypervisorAdapter, VmInfo } from '../../hypervisors/types.js';
import { VmdrError } from '../../hypervisors/errors.js';
import { fileSize, GUEST_READY, parseGuestFields, waitForSerialLine } from '../../plugin/failover/serial-health.js';

const exec = promisify(execFile);
export const LAB_DIR = process.env.VMDR_LAB_DIR ?? '/var/lib/vmdr/lab';
export const PRODUCTION_NETWORK = 'vmdr-lab-prod';

/**
 * The lab guest's kernel command line (init.sh reads its vmdr.* options). no_timer_check: this
 * machine's guests run under TCG, and a vCPU starved while others boot failed the kernel's timer
 * check ("Kernel panic - not syncing: IO-APIC + timer doesn't work!": six fleet guests at once on
 * two cores, and a lab source VM while two other processes' tests ran); Linux skips that check by
 * itself under KVM, not under TCG.
 */
export const LAB_CMDLINE = 'console=ttyS0 quiet no_timer_check';

export function labBoot(cmdline = LAB_CMDLINE) {
  return { kind: 'kernel' as const, kernel: join(LAB_DIR, 'vmlinuz'), initrd: join(LAB_DIR, 'initrd.img'), cmdline };
}

export async function makeDisk(path: string, marker: string, size = '64M'): Promise<void> {
  await exec(join(import.meta.dirname, '..', '..', '..', 'scripts', 'lab', 'make-disk'), [path, marker, size]).catch(async (err) => {
    // From source (tsx) the script sits two levels up, from dist/ three.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await exec(join(import.meta.dirname, 'make-disk'), [path, marker, size]);
  });
}

export interface ProductionVm {
  vm: VmInfo;
  ready: Record<string, string>;
}

/** Defines (if missing) and starts a lab source VM; resolves once its guest says it is ready. */
export async function ensureProductionVm(adapter: HypervisorAdapter, name: string): Promise<ProductionVm> {
  await adapter.ensureIsolatedNetwork({ name: PRODUCTION_NETWORK, labels: { role: 'lab' } });
  const dir = join(LAB_DIR, 'production', name);
  const serialLog = join(dir, 'console.log');
  let vm = await adapter.getVm(name).catch((err: unknown) => {
    if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return undefined;
    throw err;
  });
  if (!vm) {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const disk = join(dir, 'vda.qcow2');
    await makeDisk(disk, name);
    vm = await adapter.defineVm({
      name,
      memoryMiB: 256,
      vcpus: 1,
      // Its guest agent runs (vmdr.agent=on) on its channel: health checks and app-consistent points have one.
      boot: labBoot(`${LAB_CMDLINE} vmdr.agent=on`),
      disks: [{ path: disk, format: 'qcow2', target: 'vda' }],
      nics: [{ network: PRODUCTION_NETWORK }],
      serialLog,
      guestAgent: true,
      labels: { role: 'lab-production' },
    });
  }
  const from = vm.powerState === 'running' ? 0 : await fileSize(serialLog);
  if (vm.powerState !== 'running') await adapter.start(name);
  const match = await waitForSerialLine({ vm: name, file: serialLog, pattern: GUEST_READY, timeoutMs: 60_000, fromOffset: from });
  return { vm: await adapter.getVm(name), ready: parseGuestFields(match[1]!) };
}
