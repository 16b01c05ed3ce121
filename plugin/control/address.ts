/**
 * Where a host's `vmdr serve` takes requests from the CLI on that host: a Unix socket named after
 * the config file it serves (its real path, so `./vmdr.yaml` and `/etc/vmdr/vmdr.yaml` are one),
 * in a directory only root reaches. A `vmdr` command given the same file finds the daemon there;
 * the config's fingerprint tells whether both read the same text.
 */
import { createHash } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { configFingerprint, readConfigText } from '../config/text.js';

/** Beside other daemons' sockets; tmpfs, so a reboot leaves no stale one. VMDR_CONTROL_DIR moves it (tests). */
export function controlDir(): string {
  return process.env.VMDR_CONTROL_DIR ?? '/run/vmdr';
}

export interface ControlAddress {
  socket: string;
  /** The config file's text's fingerprint, as this process reads it now. */
  fingerprint: string;
}

export function controlSocket(realConfigPath: string): string {
  return join(controlDir(), `control-${createHash('sha256').update(realConfigPath).digest('hex').slice(0, 16)}.sock`);
}

/** The address for config `file`; undefined when the file cannot be read (the command's own load says why). */
export async function controlAddress(file: string): Promise<ControlAddress | undefined> {
  try {
    const [real, text] = await Promise.all([realpath(file), readConfigText(file)]);
    return { socket: controlSocket(real), fingerprint: configFingerprint(text) };
  } catch {
    return undefined;
  }
}
