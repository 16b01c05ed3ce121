/**
 * A config file's text, read within bounds, and its fingerprint. Apart from load.ts so a command
 * that only needs to know which config it was given (`vmdr sync` handing over to `vmdr serve`)
 * does not load the YAML parser and the schema.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { ConfigInvalid } from './errors.js';

/**
 * A config is a page of settings, not a data set: a larger file is refused before it is read, so
 * parsing one takes seconds at worst, never minutes or gigabytes (docs/config.md has the figures).
 */
export const MAX_CONFIG_BYTES = 1024 * 1024;
export const TOO_LARGE = 'larger than 1 MiB, the most a config may have';

export function configFingerprint(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The file's text, read only when its size is within MAX_CONFIG_BYTES (a FIFO or a growing file too). */
export async function readConfigText(file: string): Promise<string> {
  const refuse = (problem: string, cause?: unknown) => new ConfigInvalid(file, {}, problem, cause);
  const handle = await open(file, 'r').catch((err: unknown) => {
    throw refuse(readProblem(err), err);
  });
  try {
    const stats = await handle.stat();
    if (stats.isDirectory()) throw refuse('is a directory, not a config file');
    if (stats.size > MAX_CONFIG_BYTES) throw refuse(`${stats.size} bytes: ${TOO_LARGE}`);
    const buffer = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let length = 0;
    for (let n = -1; n !== 0 && length < buffer.length; length += n) {
      ({ bytesRead: n } = await handle.read(buffer, length, buffer.length - length));
    }
    if (length > MAX_CONFIG_BYTES) throw refuse(TOO_LARGE);
    return buffer.toString('utf8', 0, length);
  } catch (err) {
    throw err instanceof ConfigInvalid ? err : refuse(readProblem(err), err);
  } finally {
    await handle.close();
  }
}

function readProblem(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'is a directory, not a config file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  return `cannot read (${code ?? String(err)})`;
}

