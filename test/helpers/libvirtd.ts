/**
 * This host's own libvirtd (qemu:///system) for tests that stop, restart or freeze it, under the
 * lab lock: found by the pidfile `libvirtd -d` writes, never by name (a lab site's libvirtd runs
 * in a namespace of its own), and started again the way the lab starts it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');

/** The main libvirtd (the pidfile `libvirtd -d` writes): never a libvirtd of another namespace. */
export async function libvirtdPid(): Promise<number | undefined> {
  const pid = Number((await readFile('/run/libvirtd.pid', 'utf8').catch(() => '')).trim());
  return pid > 0 && processExists(pid) ? pid : undefined;
}

export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function stopLibvirtd(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  const pid = await libvirtdPid();
  assert.ok(pid, 'libvirtd is running');
  process.kill(pid, signal);
  // libvirtd forces its own shutdown 30 s after a SIGTERM its jobs do not let it finish.
  await until(`libvirtd (${pid}) to exit after ${signal}`, async () => !processExists(pid), 45_000);
}

/** libvirtd answering again, whatever a test left it in: frozen (SIGSTOP), shutting down, or gone. */
export async function ensureLibvirtd(): Promise<void> {
  const pid = await libvirtdPid();
  if (pid !== undefined && (await isStopped(pid))) process.kill(pid, 'SIGCONT');
  await startLibvirtd().catch(async (err: unknown) => {
    if (pid === undefined) throw err;
    await until(`libvirtd (${pid}) to finish shutting down`, async () => !processExists(pid), 45_000);
    await startLibvirtd();
  });
}

/** Starts libvirtd the way the lab does (and puts vmdr's hook back if it went): waits until it answers. */
export async function startLibvirtd(): Promise<void> {
  await exec(join(ROOT, 'scripts', 'lab', 'start-daemons'));
}

/** A process stopped by SIGSTOP: state T in /proc/PID/stat. */
export async function isStopped(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T');
}

export async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 90_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await ok()); ) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
