/**
 * The real lab for tests: the lab guest (built by scripts/lab/build-guest when missing), disks with
 * markers, and the serial-console wait the product itself uses.
 */
import { execFile } from 'node:child_process';
import { access, mkdir, mkdtemp, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LAB_DIR, makeDisk } from '../../scripts/lab/production.js';

export { makeDisk, labBoot } from '../../scripts/lab/production.js';
export { waitForSerialLine, parseGuestFields, GUEST_READY, fileSize } from '../../plugin/failover/serial-health.js';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');

export function labPaths() {
  return { dir: LAB_DIR, kernel: join(LAB_DIR, 'vmlinuz'), initrd: join(LAB_DIR, 'initrd.img'), baseDisk: join(LAB_DIR, 'base-disk.qcow2') };
}

export async function ensureLabGuest(): Promise<void> {
  const paths = labPaths();
  const present = await Promise.all([paths.kernel, paths.initrd, paths.baseDisk].map((p) => access(p).then(() => true, () => false)));
  if (present.every(Boolean)) return;
  await exec(join(ROOT, 'scripts', 'lab', 'build-guest'));
}

/** A scratch directory QEMU (user libvirt-qemu) can write its console logs and disks into. */
export async function labScratchDir(prefix: string): Promise<string> {
  const base = join(LAB_DIR, 'tests');
  await mkdir(base, { recursive: true, mode: 0o755 });
  const dir = await mkdtemp(join(base, `${prefix}-`));
  await chmod(dir, 0o755);
  return dir;
}

/** Runs the built CLI; resolves with its exit code and output whatever the code. */
export async function runVmdr(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [join(ROOT, 'dist', 'scripts', 'vmdr.js'), ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
