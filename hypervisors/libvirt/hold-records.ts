/**
 * The records of the holds vmdr processes have on this host's VMs (Hold in hypervisors/types.ts):
 * one file per VM held, written before the pause or freeze and removed after the release, so that
 * a holder killed in between (kill -9, OOM) leaves what another vmdr process needs to release the
 * VM (left-holds.ts). A file is named by the hypervisor's URI (one machine may reach several
 * libvirt hosts), the VM, the kind and the holder's pid, and holds the holder's start time: a pid
 * reused by another process is not the holder. Under /run: a host that reboots has no paused QEMU,
 * and no record. 0600 files in a 0700 directory, written whole (a temporary file renamed), as
 * another process may read them at any moment. Writing one costs well under a millisecond (tmpfs).
 *
 * Whoever releases a held VM claims its record first (a `.claim` file beside it, created
 * exclusively): the holder for its own release, another process for a left hold. So a holder
 * that overran its deadline learns, at its release, that another process took its hold (the claim
 * or the record is not its own any more): its capture may have fallen after that release.
 *
 * A release by another process marks the record before it acts (`.tried`, naming that process and
 * when), and the mark stays when the release fails: a resume or thaw that reports failure may have
 * taken effect (a call that timed out while libvirt or the agent did it). The record stays, so
 * `vmdr status` shows the hold and the next sweep tries again, past the mark; the holder's own
 * claim, made later, finds the mark and learns its hold was broken. The mark goes with the record.
 * Marked before the release, not after its failure: a mark that cannot be written stops the
 * release before it touches the VM, and a releaser killed mid-release leaves it too.
 */
import { createHash } from 'node:crypto';
import { access, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
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

/** Who claimed a record to release its VM (`<file>.claim`). */
interface StoredClaim {
  pid: number;
  pidStart: string;
}

/** A release by another process than the holder, begun (`<file>.tried`): when. */
interface StoredTry extends StoredClaim {
  at: number;
}

/** A release's hold on a record: after the release, the record goes (released) or stays for the next try. */
export interface HoldClaim {
  /** `tellHolder`: the claim stays beside the removed record, for its live holder to find whose release it was. */
  end(released: boolean, tellHolder?: boolean): Promise<void>;
}

/** The holder's claim was refused: another vmdr process released (or is releasing, or tried to release) its VM. */
export interface HoldTaken {
  /** That process, when its claim names one that is alive or was. */
  by?: number;
  /** That process's release ended without removing the record (it failed, but may have taken effect): the next sweep tries again. */
  failed?: true;
}

/** The holder's handle on its record (HoldRecords.record). */
export interface RecordedHold {
  readonly deadline: Date;
  /**
   * Claims the record for the holder's own release, before it releases: HoldTaken when another
   * process claimed or removed it first, or tried to release it (the hold's deadline passed): the
   * hold was broken, and the VM is that process's (or the next sweep's) to release.
   */
  claim(): Promise<HoldClaim | HoldTaken>;
  /** Removes the record of a hold never taken (the pause or freeze failed). */
  remove(): Promise<void>;
}

export const isTaken = (c: HoldClaim | HoldTaken): c is HoldTaken => !('end' in c);

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
   * path; resolves with the holder's handle on it. Fails with HoldUnrecorded.
   */
  async record(vm: string, kind: Hold['kind'], boundMs: number): Promise<RecordedHold> {
    const file = join(this.dir, `${this.prefix()}${digest(vm)}.${kind}.${process.pid}`);
    const since = Date.now();
    const stored: Stored = { uri: this.uri, vm, kind, pid: process.pid, pidStart: await ownStart(), since, deadline: since + boundMs };
    try {
      this.made ??= mkdir(this.dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
        this.made = undefined;
        throw err;
      });
      await this.made;
      // A claim or a try a releaser left on a record of this name (a pid used again) is not on this one.
      await Promise.all([rm(claimFile(file), { force: true }), rm(triedFile(file), { force: true })]);
      await writeFile(`${file}.new`, JSON.stringify(stored), { mode: 0o600 });
      await rename(`${file}.new`, file);
    } catch (err) {
      throw new HoldUnrecorded(vm, file, err);
    }
    // A record that would not go is harmless: once this process has ended, the next sweep finds the
    // VM running (or thawed) and removes it.
    const remove = () => rm(file, { force: true }).catch(() => undefined);
    return {
      deadline: new Date(stored.deadline),
      claim: () => claim(file, since, false),
      remove,
    };
  }

  /**
   * Claims a left hold's record for a release by this process: undefined when another release
   * (its holder's own, another process's) has it, or it is gone. A claim whose process is gone
   * (killed mid-release) is taken over; a failed release's mark is not in the way. The record is
   * marked as tried by this process before the claim resolves, for the holder to find.
   */
  async claim(hold: HoldEntry): Promise<HoldClaim | undefined> {
    const c = await claim(hold.file, hold.since.getTime(), true);
    return isTaken(c) ? undefined : c;
  }

  /** The holds recorded for this URI, each with whether it is left (its holder gone, or its deadline passed). */
  async list(): Promise<HoldEntry[]> {
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const prefix = this.prefix();
    const now = Date.now();
    // A release's note that no holder came to read (it ended first, or looked mid-release) goes after a
    // while; so does a failed release's mark left by a releaser killed between the record and it.
    const recordOf = (n: string) => (n.endsWith(CLAIM) || n.endsWith(TRIED) ? n.slice(0, n.lastIndexOf('.')) : undefined);
    const orphans = names.filter((n) => n.startsWith(prefix) && recordOf(n) !== undefined && !names.includes(recordOf(n)!));
    await Promise.all(
      orphans.map(async (n) => {
        const file = join(this.dir, n);
        const made = await stat(file).then((s) => s.mtimeMs, () => now);
        if (now - made > ORPHAN_CLAIM_MS) await rm(file, { force: true });
      }),
    );
    const entries = await Promise.all(
      names
        .filter((n) => n.startsWith(prefix) && !n.endsWith('.new') && recordOf(n) === undefined)
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

const CLAIM = '.claim';
const TRIED = '.tried';
/** Longer than any release takes (a thaw's agent calls are bounded by seconds). */
const ORPHAN_CLAIM_MS = 60_000;
const claimFile = (file: string) => `${file}${CLAIM}`;
const triedFile = (file: string) => `${file}${TRIED}`;

/**
 * Claims the record `file` of the hold that began at `since`: the claim file created exclusively,
 * then the record found still there and the same. `takeOver`: a claim whose process is gone is
 * removed and made again (a releaser killed mid-release); the holder never takes one over. The
 * holder's claim then looks for another process's mark (none can be written while it holds the
 * claim); another process's claim writes its own over it.
 */
async function claim(file: string, since: number, takeOver: boolean): Promise<HoldClaim | HoldTaken> {
  const claimed = claimFile(file);
  const mine: StoredClaim = { pid: process.pid, pidStart: await ownStart() };
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(claimed, JSON.stringify(mine), { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // Unreadable: just created, its content not written yet; its process lives.
      const other = await readFile(claimed, 'utf8').then((t) => JSON.parse(t) as StoredClaim, () => undefined);
      const by = other ? { by: other.pid } : {};
      if (!takeOver) {
        // The holder reads a finished release's note once: it goes with the record it was about.
        if (!(await exists(file))) await rm(claimed, { force: true });
        return by;
      }
      const gone = other !== undefined && (await processStart(other.pid)) !== other.pidStart;
      if (!gone || attempt > 0) return by;
      await rm(claimed, { force: true });
    }
  }
  const stored = await readFile(file, 'utf8').then((t) => JSON.parse(t) as Stored, () => undefined);
  if (stored?.since !== since) {
    // Released and removed by another process before this claim: not this claim's to release.
    await rm(claimed, { force: true });
    return {};
  }
  if (takeOver) {
    await writeFile(triedFile(file), JSON.stringify({ ...mine, at: Date.now() } satisfies StoredTry), { mode: 0o600 }).catch(async (err: unknown) => {
      await rm(claimed, { force: true });
      throw err;
    });
  } else {
    // Unreadable (torn by a releaser killed while writing it): a release was begun all the same.
    const tried = await readFile(triedFile(file), 'utf8')
      .then((t) => (JSON.parse(t) as StoredTry).pid)
      .catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : 0));
    if (tried !== undefined) {
      await rm(claimed, { force: true });
      return { ...(tried ? { by: tried } : {}), failed: true };
    }
  }
  return {
    end: async (released, tellHolder = false) => {
      if (released) {
        await rm(file, { force: true }).catch(() => undefined);
        await rm(triedFile(file), { force: true }).catch(() => undefined);
      }
      if (!released || !tellHolder) await rm(claimed, { force: true }).catch(() => undefined);
    },
  };
}

const exists = (file: string) => access(file).then(() => true, () => false);

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
