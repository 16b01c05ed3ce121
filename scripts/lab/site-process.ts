/**
 * A process started inside a lab site through `scripts/lab/sites exec` runs under nsenter, which
 * must fork to enter the site's PID namespace and does not pass signals on: a signal meant for the
 * command goes to nsenter's only child instead.
 */
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';

export async function signalThroughNsenter(nsenter: ChildProcess, name: NodeJS.Signals): Promise<void> {
  if (nsenter.exitCode !== null || nsenter.signalCode !== null) return;
  const children = await readFile(`/proc/${nsenter.pid}/task/${nsenter.pid}/children`, 'utf8').catch(() => '');
  const command = Number(children.trim().split(/\s+/)[0]);
  if (command > 0) process.kill(command, name);
  else nsenter.kill(name);
}
