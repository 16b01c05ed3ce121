/**
 * This test process's own children that are still running, by program name: how a test checks
 * that an operation ended the tools it started (qemu-nbd, nbdcopy), also when it failed.
 */
import { readdir, readFile } from 'node:fs/promises';

export async function runningChildren(names: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const name = /^Name:\s*(\S+)/m.exec(status)?.[1];
    const ppid = Number(/^PPid:\s*(\d+)/m.exec(status)?.[1]);
    if (ppid === process.pid && name !== undefined && names.includes(name)) found.push(`${name} ${pid}`);
  }
  return found;
}
