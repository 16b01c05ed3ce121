/**
 * The backup jobs vmdr begins, and the ones it left behind. libvirt keeps a pull backup running
 * across a restart of libvirtd and after the process that began it died; until it is aborted, no
 * new backup can begin on that VM (backup-begin waits 30 s for the job, then fails with "cannot
 * acquire state change lock"). vmdr marks each job it begins with its process id, in the scratch
 * file names libvirt reports back in backup-dumpxml, so a later cycle can tell a job vmdr left
 * (its process is gone, or this process gave it up when its abort failed) from one a running vmdr
 * cycle or another tool still uses. Only the first kind is ended.
 */
import { rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { BackupJobBusy, BackupJobStuck, VmdrError } from '../errors.js';
import type { EndedBackupJob } from '../types.js';
import { JOB_OPERATIONS, VIR_DOMAIN_JOB, VIR_DOMAIN_JOB_OPERATION_BACKUP } from './api/codes.js';
import type { LibvirtConnection } from './connection.js';
import { at, childElements, element, parseLibvirtXml } from './xml.js';

/** Where beginBackup makes a session's scratch directory when the caller names none. */
export const SCRATCH_DIR_PREFIX = join(tmpdir(), 'vmdr-scratch-');
const OWNER_MARK = /\.vmdr-(\d+)\.scratch$/;
const DEFAULT_TIMEOUT_MS = 30_000;
const POLL_MS = 100;

/** Scratch files of the sessions this process has begun and not yet ended: their jobs are in use. */
const inUse = new Set<string>();

/** A scratch file name that says which process began the job. */
export function scratchFileName(vm: string, disk: string): string {
  return `${vm}-${disk}.vmdr-${process.pid}.scratch`;
}

/** Marks a session's scratch files in use from just before its job begins until its end() is first called. */
export function markInUse(scratch: string[], used: boolean): void {
  for (const file of scratch) {
    if (used) inUse.add(file);
    else inUse.delete(file);
  }
}

interface RunningJob {
  /** In the user's words: "pull backup (NBD 127.0.0.1:41234, disks vda)", "outgoing migration job". */
  description: string;
  /** A backup's scratch files, as backup-dumpxml names them. */
  scratch: string[];
}

/** Aborts the VM's job. A job that is gone by the time the abort arrives counts as ended. */
export async function abortJob(conn: LibvirtConnection, vm: string, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  await conn.call({ operation: 'end backup', vm }, 'abortJob', vm).catch(async (err: unknown) => {
    // Asked again: an abort that failed because no job is left is done.
    if (await runningJob(conn, vm, signal).then((job) => job === undefined, () => false)) return;
    throw err;
  });
}

export async function endLeftoverBackup(conn: LibvirtConnection, vm: string, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<EndedBackupJob | undefined> {
  const { signal, timeoutMs = DEFAULT_TIMEOUT_MS } = options;
  const job = await runningJob(conn, vm, signal);
  if (!job) return undefined;
  const remedy = `end it with \`virsh -c ${conn.uri} domjobabort ${vm}\``;
  const owner = ownerOf(job);
  if (owner.inUse) throw new BackupJobBusy(vm, conn.uri, job.description, owner.text, `wait for it to end, or ${remedy}`);
  const stuck = (detail: string, cause?: unknown) => new BackupJobStuck(vm, conn.uri, job.description, `left by ${owner.text}`, detail, remedy, cause);
  await abortJob(conn, vm, signal).catch((err: unknown) => {
    if (err instanceof VmdrError && err.code === 'HYPERVISOR_UNREACHABLE') throw err;
    throw stuck(`aborting it failed: ${(err as Error).message}`, err);
  });
  for (const deadline = Date.now() + timeoutMs; await runningJob(conn, vm, signal); ) {
    if (Date.now() >= deadline) throw stuck(`it was still running ${timeoutMs / 1000} s after it was aborted`);
    await delay(POLL_MS, undefined, { signal });
  }
  // vmdr made the scratch images before the job (scratch-images.ts), so libvirt leaves them behind.
  for (const file of job.scratch) await rm(file, { force: true }).catch(() => undefined);
  for (const dir of new Set(job.scratch.map((f) => dirname(f)))) {
    if (dir.startsWith(SCRATCH_DIR_PREFIX)) await rmdir(dir).catch(() => undefined);
  }
  return { job: job.description, leftBy: owner.text };
}

/** The VM's running job, if any: libvirt runs at most one (a backup, a migration, a save, ...). */
async function runningJob(conn: LibvirtConnection, vm: string, signal?: AbortSignal): Promise<RunningJob | undefined> {
  signal?.throwIfAborted();
  const info = await conn.call({ operation: 'read the job of', vm, requires: 'running' }, 'jobInfo', vm).catch((err: unknown) => {
    // A shut-off VM has no QEMU and so no job.
    if (err instanceof VmdrError && err.code === 'INVALID_POWER_STATE') return undefined;
    throw err;
  });
  if (!info || info.type === VIR_DOMAIN_JOB.NONE || info.type === VIR_DOMAIN_JOB.COMPLETED) return undefined;
  if (info.operation !== VIR_DOMAIN_JOB_OPERATION_BACKUP) return { description: `${JOB_OPERATIONS[info.operation ?? 0] ?? 'unknown'} job`, scratch: [] };
  let xml: string;
  try {
    xml = await conn.call({ operation: 'read the backup job of', vm }, 'backupXml', vm);
  } catch (err) {
    // The job may have ended between the two questions.
    if (!(await runningJob(conn, vm, signal).catch(() => undefined))) return undefined;
    throw err;
  }
  const backup = parseLibvirtXml(xml, 'backup XML');
  const disks = childElements(at(backup, 'disks') ?? element('disks'), 'disk').filter((d) => d.attrs.backup !== 'no');
  const server = at(backup, 'server')?.attrs;
  const where = server ? (server.transport === 'unix' ? `NBD ${server.socket}` : `NBD ${server.name}:${server.port}`) : undefined;
  return {
    description: `${backup.attrs.mode ?? 'push'} backup (${[where, `disks ${disks.map((d) => d.attrs.name).join(', ')}`].filter(Boolean).join(', ')})`,
    scratch: disks.map((d) => at(d, 'scratch')?.attrs.file).filter((f): f is string => Boolean(f)),
  };
}

/** Whose the job is, and whether it may be ended. */
function ownerOf(job: RunningJob): { inUse: boolean; text: string } {
  const pid = job.scratch.map((f) => OWNER_MARK.exec(basename(f))?.[1]).find(Boolean);
  if (pid === undefined) return { inUse: true, text: 'that vmdr did not start' };
  if (Number(pid) === process.pid) {
    return job.scratch.some((f) => inUse.has(f))
      ? { inUse: true, text: 'of a cycle of this vmdr process that is still running' }
      : { inUse: false, text: 'an earlier cycle of this process (its end failed)' };
  }
  return processExists(Number(pid))
    ? { inUse: true, text: `of vmdr process ${pid}, which is still running` }
    : { inUse: false, text: `vmdr process ${pid} (no longer running)` };
}

/** Adapters may not import plugin/, where the state file's leases ask the same question. */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
