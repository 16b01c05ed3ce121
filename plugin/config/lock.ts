/**
 * The lock that serializes changes to one config file: flock(2) on a lock file beside it (and
 * takeFileLock, the same for anything else held across processes: a consistency group's cycle). The
 * kernel drops the lock when its holder dies, so a crashed `vmdr tenant create` never leaves a
 * stale lock for an operator to clean up (an O_EXCL lock file would). flock, not fcntl: two
 * opens in one process (the daemon's API serving two requests) exclude each other too.
 */
import { open, type FileHandle } from 'node:fs/promises';
import koffi from 'koffi';
import { ConfigLocked, ConfigNotWritable } from './errors.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
/** How often a waiting editor asks again: edits take milliseconds. */
const RETRY_MS = 25;

let flock: ((fd: number, operation: number) => number) | undefined;
function flockCall(): (fd: number, operation: number) => number {
  flock ??= koffi.load('libc.so.6').func('int flock(int fd, int operation)') as (fd: number, operation: number) => number;
  return flock;
}

export interface HeldLock {
  release(): Promise<void>;
}

/**
 * Takes the exclusive lock of `lockFile` (created 0600 when missing), waiting up to `timeoutMs`;
 * then fails with ConfigLocked naming the holder (the pid it wrote into the file).
 */
export async function lockConfig(configFile: string, lockFile: string, timeoutMs: number): Promise<HeldLock> {
  return takeFileLock(lockFile, { timeoutMs }, {
    cannotOpen: (err) => new ConfigNotWritable(configFile, `cannot open its lock file ${lockFile}: ${err.code ?? err.message}`, err),
    cannotLock: (detail) => new ConfigNotWritable(configFile, `cannot lock its lock file (${detail})`),
    busy: (holder) => new ConfigLocked(configFile, lockFile, holder, timeoutMs),
  });
}

/**
 * The exclusive flock of `lockFile` (created 0600 when missing), for any one thing held across
 * processes: waits up to `timeoutMs` (or until `signal` aborts), asking again every `retryMs`,
 * then throws `busy` with the holder's pid (which each holder writes into the file).
 */
export async function takeFileLock(
  lockFile: string,
  wait: { timeoutMs: number; retryMs?: number; signal?: AbortSignal },
  errors: { cannotOpen(err: NodeJS.ErrnoException): Error; cannotLock(detail: string): Error; busy(holder: string | undefined): Error },
): Promise<HeldLock> {
  const handle = await open(lockFile, 'a+', 0o600).catch((err: NodeJS.ErrnoException) => {
    throw errors.cannotOpen(err);
  });
  try {
    const deadline = Date.now() + wait.timeoutMs;
    while (!tryLock(handle, errors.cannotLock)) {
      wait.signal?.throwIfAborted();
      if (Date.now() >= deadline) throw errors.busy(await holderOf(handle));
      await new Promise((resolve) => setTimeout(resolve, wait.retryMs ?? RETRY_MS));
    }
    // Who holds it, for the next one's error: the file is ours to rewrite while we hold the lock.
    await handle.truncate(0);
    await handle.write(`${process.pid}\n`, 0);
  } catch (err) {
    await handle.close();
    throw err;
  }
  let released = false;
  return {
    release: async () => {
      if (released) return;
      released = true;
      // The pid is only a hint for a waiter's error: failing to clear it must not keep the lock.
      await handle.truncate(0).catch(() => undefined);
      flockCall()(handle.fd, LOCK_UN);
      await handle.close();
    },
  };
}

function tryLock(handle: FileHandle, cannotLock: (detail: string) => Error): boolean {
  if (flockCall()(handle.fd, LOCK_EX | LOCK_NB) === 0) return true;
  const errno = koffi.errno();
  const { EWOULDBLOCK, EAGAIN, EINTR } = koffi.os.errno;
  if (errno === EWOULDBLOCK || errno === EAGAIN || errno === EINTR) return false;
  throw cannotLock(`flock: errno ${errno}`);
}

async function holderOf(handle: FileHandle): Promise<string | undefined> {
  const { buffer, bytesRead } = await handle.read(Buffer.alloc(32), 0, 32, 0);
  const pid = buffer.toString('utf8', 0, bytesRead).trim();
  return /^\d+$/.test(pid) ? pid : undefined;
}
