/**
 * The start leases scripts/hooks/libvirt-qemu reads (see StartLeases in hypervisors/types.ts): one
 * file per VM, named by the domain name (what libvirt passes the hook), holding the second (Unix
 * time) its lease runs out. Under /run: a host that reboots holds none, which is the point. The
 * hook leaves an empty file under REFUSED_DIR for each start it refused for want of a lease.
 * Files are 0600 in 0700 directories, written whole (a temporary file renamed), as the hook may
 * read them at any moment.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VmdrError } from '../errors.js';
import type { StartLeases } from '../types.js';

/** scripts/hooks/libvirt-qemu names the same directories. */
export const START_LEASE_DIR = '/run/vmdr/start-leases';
export const START_REFUSED_DIR = '/run/vmdr/start-refused';

export class StartLeaseFiles implements StartLeases {
  constructor(
    private readonly dir = START_LEASE_DIR,
    private readonly refusedDir = START_REFUSED_DIR,
  ) {}

  async grant(vm: string, until: Date): Promise<void> {
    const file = join(this.dir, vm);
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await writeFile(`${file}.new`, `${Math.floor(until.getTime() / 1000)}\n`, { mode: 0o600 });
      await rename(`${file}.new`, file);
    } catch (err) {
      throw new VmdrError('START_LEASE_UNWRITABLE', `write start lease ${file}: ${(err as Error).message}`, {
        subject: { vm, file },
        cause: err,
        remedy: 'run vmdr serve as root on the source host: its qemu hook starts a guarded source VM only with this lease',
      });
    }
  }

  async revoke(vm: string): Promise<void> {
    await rm(join(this.dir, vm), { force: true });
  }

  async until(vm: string): Promise<Date | undefined> {
    const text = await readFile(join(this.dir, vm), 'utf8').catch(() => undefined);
    const seconds = text === undefined ? NaN : Number(text.trim());
    return Number.isSafeInteger(seconds) ? new Date(seconds * 1000) : undefined;
  }

  async refused(): Promise<string[]> {
    return (await readdir(this.refusedDir).catch(() => [])).filter((name) => !name.startsWith('.'));
  }

  async clearRefused(vm: string): Promise<void> {
    await rm(join(this.refusedDir, vm), { force: true });
  }
}
