/**
 * The simplest health signal a guest can give: a line on its serial console, written by the
 * hypervisor to a file. Waiting reads only what was written after `fromOffset` (the file's size
 * before the boot), so a line from an earlier boot never counts.
 */
import { watch, type FSWatcher } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as delay } from 'node:timers/promises';
import { VmdrError } from '../../hypervisors/errors.js';
import { Wakeup } from './wakeup.js';

export class HealthCheckFailed extends VmdrError {
  constructor(vm: string, check: string, detail: string) {
    super('HEALTH_CHECK_FAILED', `VM "${vm}" failed its ${check} health check: ${detail}`, { subject: { vm, check } });
  }
}

export async function fileSize(file: string): Promise<number> {
  return stat(file).then(
    (s) => s.size,
    () => 0,
  );
}

export interface SerialWait {
  vm: string;
  file: string;
  pattern: RegExp;
  timeoutMs: number;
  fromOffset?: number;
  signal?: AbortSignal;
  pollMs?: number;
}

/** At most this much of the console is read at a time, and kept of a line that has not ended. */
const READ_BYTES = 256 * 1024;
const MAX_LINE_BYTES = 64 * 1024;
/**
 * While the console file is watched (inotify), a look is made when the guest writes; this is how
 * long a wait goes without news before it looks anyway (a write the watch missed, a file replaced).
 */
const WATCHED_POLL_MS = 1_000;

/**
 * Resolves with the first matching line; on timeout the error quotes the console's last lines.
 * Each look reads only what the console got since the last one: a guest that prints without end
 * costs neither memory nor time beyond that. Looks are made when the file changes (a watch on it),
 * at most every `pollMs`; without a watch (the file is not there yet, or cannot be watched) every
 * `pollMs`.
 */
export async function waitForSerialLine(wait: SerialWait): Promise<RegExpExecArray> {
  const deadline = Date.now() + wait.timeoutMs;
  const pollMs = wait.pollMs ?? 100;
  const decoder = new StringDecoder('utf8');
  const reader = new ConsoleReader(wait.file, wait.fromOffset ?? 0);
  const written = new Wakeup();
  let watcher: FSWatcher | undefined;
  let partial = '';
  let last: string[] = [];
  try {
    for (;;) {
      const chunk = await reader.next();
      // QEMU writes the console a few bytes at a time: only a line that has ended counts, or a
      // check would match (and report) half of what the guest is printing.
      const lines = (partial + decoder.write(chunk)).split('\n');
      partial = lines.pop()!.slice(-MAX_LINE_BYTES);
      for (const raw of lines) {
        const line = raw.replace(/\r$/, '');
        const match = wait.pattern.exec(line);
        if (match) return match;
        if (line.trim()) last = [...last.slice(-2), line.trim()];
      }
      if (chunk.length === READ_BYTES) continue;
      if (Date.now() >= deadline) break;
      if (chunk.length > 0) {
        // A guest that prints is looked at every pollMs, unwatched: QEMU writes its console a few
        // bytes at a time, and a watch would wake this process at each write (a booting kernel:
        // over a hundred a second per guest).
        watcher?.close();
        watcher = undefined;
        await delay(pollMs, undefined, { signal: wait.signal });
        continue;
      }
      if (!watcher) {
        // Watched from now on, and looked at once more: a write just before the watch began wakes no pause.
        watcher = watchConsole(wait.file, written, () => (watcher = undefined));
        if (watcher) continue;
      }
      await written.pause(Math.min(watcher ? WATCHED_POLL_MS : pollMs, Math.max(0, deadline - Date.now())), wait.signal);
    }
  } finally {
    watcher?.close();
    await reader.close();
  }
  const tail = [...last, partial.trim()].filter(Boolean).slice(-3).join(' | ') || '(console is empty)';
  throw new HealthCheckFailed(wait.vm, 'serial console', `no line matching ${wait.pattern} within ${wait.timeoutMs / 1000} s; last output: ${tail}`);
}

/**
 * A watch that notifies `written` on each change of `file`; undefined where the file cannot be
 * watched (not there yet, no inotify). One that fails later (the file removed) is closed and
 * `lost` called: the wait looks every pollMs again.
 */
function watchConsole(file: string, written: Wakeup, lost: () => void): FSWatcher | undefined {
  try {
    const watcher = watch(file, { persistent: false }, () => written.notify());
    watcher.on('error', () => {
      watcher.close();
      lost();
      written.notify();
    });
    return watcher;
  } catch {
    return undefined;
  }
}

/**
 * The console file from an offset on, through one open handle and one buffer for the whole wait
 * (a handle and a buffer per look cost six booting guests their CPU). A file not there yet is
 * opened at a later look.
 */
class ConsoleReader {
  private handle: FileHandle | undefined;
  private readonly buffer = Buffer.allocUnsafe(READ_BYTES);

  constructor(
    private readonly file: string,
    private offset: number,
  ) {}

  /** What the file got since the last call, up to READ_BYTES; valid until the next call. */
  async next(): Promise<Buffer> {
    this.handle ??= await open(this.file, 'r').catch(() => undefined);
    if (!this.handle) return this.buffer.subarray(0, 0);
    const { bytesRead } = await this.handle.read(this.buffer, 0, READ_BYTES, this.offset);
    this.offset += bytesRead;
    return this.buffer.subarray(0, bytesRead);
  }

  async close(): Promise<void> {
    await this.handle?.close();
  }
}

/** Up to `max` bytes from `offset`; none when the file is missing or has no more. */
export async function readFrom(file: string, offset: number, max: number): Promise<Buffer> {
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return Buffer.alloc(0);
  try {
    const buffer = Buffer.alloc(max);
    const { bytesRead } = await handle.read(buffer, 0, max, offset);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** The lab guest's and any vmdr-aware guest's ready line: `VMDR-GUEST ready key=value …`. */
export const GUEST_READY = /^VMDR-GUEST ready (.*)$/;

export function parseGuestFields(fields: string): Record<string, string> {
  return Object.fromEntries(
    fields
      .trim()
      .split(/\s+/)
      .map((pair) => pair.split('=', 2) as [string, string])
      .filter(([key]) => key),
  );
}
