/**
 * virsh, for what the binding does not cover (networks, undefine flags, block info). Always an
 * argv array, never a shell string; a failure is translated from virsh's stderr by the same
 * function that translates the binding's errors.
 */
import { execFile } from 'node:child_process';
import { translateLibvirtError, type LibvirtErrorContext } from './errors.js';

export interface VirshOptions extends Omit<LibvirtErrorContext, 'host'> {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export class VirshFailed extends Error {
  constructor(
    readonly args: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | string | null,
  ) {
    // virsh prefixes every line with "error: "; the last line is usually the most specific.
    super(
      stderr
        .split('\n')
        .map((l) => l.replace(/^error:\s*/, '').trim())
        .filter(Boolean)
        .join(': ') || `virsh ${args.join(' ')} exited with ${exitCode}`,
    );
    this.name = 'VirshFailed';
  }
}

export function virsh(uri: string, args: readonly string[], options: VirshOptions): Promise<string> {
  const { signal, timeoutMs, ...ctx } = options;
  const argv = ['--quiet', '-c', uri, ...args];
  return new Promise((resolve, reject) => {
    execFile(
      'virsh',
      argv,
      { signal, timeout: timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        if (err.name === 'AbortError') return reject(err);
        const code = (err as NodeJS.ErrnoException).code;
        const cause = code === 'ENOENT' ? new VirshFailed(argv, 'virsh is not installed (Debian: libvirt-clients)', code) : new VirshFailed(argv, stderr, code ?? null);
        reject(translateLibvirtError(cause, { ...ctx, host: uri }));
      },
    );
  });
}
