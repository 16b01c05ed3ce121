/**
 * The records of the holds vmdr processes have on this host's VMs (Hold in hypervisors/types.ts):
 * one file per VM held, written before the pause or freeze and removed after the release, so that
 * a holder killed in between (kill -9, OOM) leaves what another vmdr process needs to release the
 * VM (left-holds.ts). A file is named by the hypervisor's URI (one machine may reach several
 * libvirt hosts), the VM, the kind and the holder's pid, and holds the holder's start time: a pid
 * reused by another process is not the holder. Under /run: a host that reboots has no paused QEMU,
 * and no record. 0600 files in a 0700 directory, written whole (a temporary file renamed), as
 * another process may read them at any moment. Writing one costs well under a millisecond (tmpfs).
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VmdrError } from '../errors.js';
import type { Hold } from '../types.js';

export const HOLD_DIR = '/run/vmdr/holds';

/** Linux's USER_HZ: the unit of a process's start time in /proc/PID/stat. */
const TICKS_PER_SECOND = 100;

interface Stored {
  uri: string;
  vm: string;
  kind: Hold['kind'];
  pid: number;
  /** Field 22 of /proc/PID/stat: clock ticks from the boot to the process's start. */
  pidStart: string;
  since: number;
  deadline: number;
}

/** A hold as listed, with the file that records it. */
export interface HoldEntry extends Hold {
  file: string;
}

export class HoldUnrecorded extends VmdrError {
  constructor(vm: string, file: string, cause: unknown) {
    super('HOLD_UNRECORDED', `VM ${JSON.stringify(vm)} was not held: its hold could not be recorded in ${file} (${(cause as Error).message})`, {
      subject: { vm, file },
      cause,
      remedy: 'run vmdr as root on the source host: a VM is paused or frozen only with a record another vmdr process can release it by',
    });
  }
}

export class HoldRecords {
  private made: Promise<unknown> | undefined;

  constructor(
    private readonly uri: string,
    private readonly dir = HOLD_DIR,
  ) {}

  /**
   * Records a hold of `vm` about to be taken, which its holder releases within `boundMs` in every
   * path; resolves with the record's removal, for after the release. Fails with HoldUnrecorded.
   */
  async record(vm: string, kind: Hold['kind'], boundMs: number): Promise<() => Promise<void>> {
    const file = join(this.dir, `${this.prefix()}${digest(vm)}.${kind}.${process.pid}`);
    const since = Date.now();
    const stored: Stored = { uri: this.uri, vm, kind, pid: process.pid, pidStart: await ownStart(), since, deadline: since + boundMs };
    try {
      this.made ??= mkdir(this.dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
        this.made = undefined;
        throw err;
      });
      await this.made;
      await writeFile(`${file}.new`, JSON.stringify(stored), { mode: 0o600 });
      await rename(`${file}.new`, file);
    } catch (err) {
      throw new HoldUnrecorded(vm, file, err);
    }
    // A record that would not go is harmless: once this process has ended, the next sweep finds the
    // VM running (or thawed) and removes it.
    return () => rm(file, { force: true }).catch(() => undefined);
  }

  /** The holds recorded for this URI, each with whether it is left (its holder gone, or its deadline passed). */
  async list(): Promise<HoldEntry[]> {
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const prefix = this.prefix();
    const now = Date.now();
    const entries = await Promise.all(
      names
        .filter((n) => n.startsWith(prefix) && !n.endsWith('.new'))
        .map(async (name): Promise<HoldEntry | undefined> => {
          const file = join(this.dir, name);
          // Gone since the listing (released), or not this URI's after all: not a hold of this host.
          const stored = await readFile(file, 'utf8').then((t) => JSON.parse(t) as Stored, () => undefined);
          if (!stored || stored.uri !== this.uri) return undefined;
          const alive = (await processStart(stored.pid)) === stored.pidStart;
          const left = !alive ? 'holder-gone' : now > stored.deadline ? 'deadline-passed' : undefined;
          return {
            file,
            vm: stored.vm,
            kind: stored.kind,
            holder: { pid: stored.pid, startedAt: (await startTime(stored.pidStart)).toISOString() },
            since: new Date(stored.since),
            deadline: new Date(stored.deadline),
            ...(left ? { left } : {}),
          };
        }),
    );
    return entries.filter((e): e is HoldEntry => e !== undefined);
  }

  /** The file-name prefix of this URI's records. */
  private prefix(): string {
    return `${digest(this.uri)}.`;
  }
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

let own: Promise<string> | undefined;

function ownStart(): Promise<string> {
  own ??= processStart(process.pid).then((s) => s ?? '');
  return own;
}

/**
 * When process `pid` started (its /proc/PID/stat field 22), or undefined when there is no such
 * process, or only its zombie (killed, not yet reaped: it holds nothing any more).
 */
async function processStart(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // The command name (field 2) may hold spaces and parentheses: the fields after it follow its last ')'.
  const fields = stat?.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (!fields || fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19];
}

let boot: Promise<number> | undefined;

/** A start time in ticks since the boot as a date (the boot's second is /proc/stat's btime). */
async function startTime(ticks: string): Promise<Date> {
  boot ??= readFile('/proc/stat', 'utf8').then((t) => Number(/^btime (\d+)$/m.exec(t)?.[1] ?? 0), () => 0);
  return new Date((await boot) * 1000 + (Number(ticks) * 1000) / TICKS_PER_SECOND);
}
