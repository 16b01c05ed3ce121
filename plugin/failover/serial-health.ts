/**
 * The simplest health signal a guest can give: a line on its serial console, written by the
 * hypervisor to a file. Waiting reads only what was written after `fromOffset` (the file's size
 * before the boot), so a line from an earlier boot never counts.
 */
import { open, stat } from 'node:fs/promises';
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

/** Resolves with the first matching line; on timeout the error quotes the console's last lines. */
export async function waitForSerialLine(wait: SerialWait): Promise<RegExpExecArray> {
  const deadline = Date.now() + wait.timeoutMs;
  let text = '';
  for (;;) {
    text = await readFrom(wait.file, wait.fromOffset ?? 0);
    // QEMU writes the console a few bytes at a time: only a line that has ended counts, or a
    // check would match (and report) half of what the guest is printing.
    for (const line of text.split('\n').slice(0, -1)) {
      const match = wait.pattern.exec(line.replace(/\r$/, ''));
      if (match) return match;
    }
    if (Date.now() >= deadline) break;
    await delay(wait.pollMs ?? 100, undefined, { signal: wait.signal });
  }
  const tail = text.trim().split('\n').slice(-3).join(' | ') || '(console is empty)';
  throw new HealthCheckFailed(wait.vm, 'serial console', `no line matching ${wait.pattern} within ${wait.timeoutMs / 1000} s; last output: ${tail}`);
}

async function readFrom(file: string, offset: number): Promise<string> {
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return '';
  try {
    const { size } = await handle.stat();
    if (size <= offset) return '';
    const buffer = Buffer.alloc(size - offset);
    await handle.read(buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
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
