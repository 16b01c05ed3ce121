/**
 * Tells a daemon when its config file was changed (by an editor, `vmdr tenant create`, config
 * management): the directory is watched, since an edit that replaces the file (vmdr's own, most
 * editors') gives the name a new inode a watch on the file itself would miss. Changes close
 * together are told once, after they settle; whether the text really changed is the caller's
 * question (its fingerprint).
 */
import { watch } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

const SETTLE_MS = 300;

export async function watchConfigFile(file: string, options: { signal: AbortSignal; onChange: () => void; onWarning?: (err: unknown) => void }): Promise<void> {
  const target = await realpath(file);
  const name = basename(target);
  let timer: NodeJS.Timeout | undefined;
  const watcher = watch(dirname(target), { persistent: false, signal: options.signal }, (_event, changed) => {
    if (changed !== null && changed !== name) return;
    clearTimeout(timer);
    timer = setTimeout(options.onChange, SETTLE_MS);
  });
  watcher.on('error', (err) => {
    if ((err as NodeJS.ErrnoException).name !== 'AbortError') options.onWarning?.(err);
  });
  options.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
}
