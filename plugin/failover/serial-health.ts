/**
 * The simplest health signal a guest can give: a line on its serial console, written by the
 * hypervisor to a file. Waiting reads only what was written after `fromOffset` (the file's size
 * before the boot), so a line from an earlier boot never counts.
 */
import { open, stat } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as delay } from 'node:timers/promises';
import { VmdrError } from '../../hypervisors/errors.js';

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
 * Resolves with the first matching line; on timeout the error quotes the console's last lines.
 * Each look reads only what the console got since the last one: a guest that prints without end
 * costs neither memory nor time beyond that.
 */
export async function waitForSerialLine(wait: SerialWait): Promise<RegExpExecArray> {
  const deadline = Date.now() + wait.timeoutMs;
  const decoder = new StringDecoder('utf8');
  let offset = wait.fromOffset ?? 0;
  let partial = '';
  let last: string[] = [];
  for (;;) {
    const chunk = await readFrom(wait.file, offset, READ_BYTES);
    offset += chunk.length;
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
    await delay(wait.pollMs ?? 100, undefined, { signal: wait.signal });
  }
  const tail = [...last, partial.trim()].filter(Boolean).slice(-3).join(' | ') || '(console is empty)';
  throw new HealthCheckFailed(wait.vm, 'serial console', `no line matching ${wait.pattern} within ${wait.timeoutMs / 1000} s; last output: ${tail}`);
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
