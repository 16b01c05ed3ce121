/**
 * Unix sockets that stand for a live daemon (the control socket, the claims on a state file's
 * sites): in a directory only this user enters, taken over when the daemon that made them died
 * (nothing accepts on them any more), refused while one still does.
 */
import { mkdir, stat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { VmdrError } from '../../hypervisors/errors.js';

/** Made 0700 if missing; refused when another user owns it or others may enter it. */
export async function privateDirectory(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const s = await stat(dir);
  if (s.uid !== process.getuid?.() || (s.mode & 0o077) !== 0) {
    throw new VmdrError('CONTROL_DIR_UNSAFE', `${dir} must be a directory of this user with mode 0700 (it is ${(s.mode & 0o777).toString(8)}, owner ${s.uid})`, { subject: { path: dir } });
  }
}

/** Whether a process accepts connections on the socket (a live daemon), within 2 s. */
export function socketAnswers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect({ path: socket, timeout: 2_000 });
    probe.once('connect', () => (probe.destroy(), resolve(true)));
    // Accepting nothing for 2 s is a daemon too busy to answer, not a dead one.
    probe.once('timeout', () => (probe.destroy(), resolve(true)));
    probe.once('error', () => resolve(false));
  });
}

/** Removes a socket a dead daemon left; throws `alive()` when a live one answers on it. */
export async function takeOver(socket: string, alive: () => VmdrError): Promise<void> {
  if (await socketAnswers(socket)) throw alive();
  await unlink(socket).catch(() => undefined);
}
