/**
 * One image served over NBD by a qemu-nbd child on a unix socket in a private temp directory.
 * Both sides use it: the libvirt adapter to read a shut-off VM's disks, the DR side to write
 * recovery points. It sits beside types.ts, like errors.ts, because adapters may not import
 * plugin/ and both need the same care:
 * - `--persistent` keeps qemu-nbd alive between clients, so it would outlive a vmdr killed with -9
 *   and keep the image locked (a VM that cannot start, a merge that fails). PR_SET_PDEATHSIG,
 *   through util-linux's setpriv (which then execs qemu-nbd in the same process), makes the kernel
 *   kill it with its parent.
 * - qemu-nbd creates its socket before it opens the image, so a connection alone proves nothing:
 *   it is ready once it greets with the newstyle "NBDMAGIC".
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageOperationFailed } from './errors.js';

const START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

export interface ServeNbdOptions {
  format?: 'qcow2' | 'raw';
  readOnly?: boolean;
  /** The export's name; qemu-nbd's default is the empty name. */
  exportName?: string;
  /** A persistent bitmap of the image to export as the context `qemu:dirty-bitmap:<bitmap>`. */
  bitmap?: string;
  /** Further qemu-nbd options (cache, discard ...). */
  extraArgs?: string[];
}

export interface NbdImageServer {
  listen: { transport: 'unix'; socket: string };
  /** Ends qemu-nbd (SIGTERM, SIGKILL after 5 s) and removes its directory. Safe twice. */
  stop(): Promise<void>;
}

export async function serveImageOverNbd(image: string, options: ServeNbdOptions = {}): Promise<NbdImageServer> {
  const dir = await mkdtemp(join(tmpdir(), 'vmdr-nbd-'));
  const socket = join(dir, 'nbd.sock');
  const args = [`--socket=${socket}`, `--format=${options.format ?? 'qcow2'}`, '--persistent', '--shared=4', ...(options.extraArgs ?? [])];
  if (options.exportName !== undefined) args.push(`--export-name=${options.exportName}`);
  if (options.bitmap) args.push(`--bitmap=${options.bitmap}`);
  if (options.readOnly) args.push('--read-only');
  args.push(image);
  const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', 'qemu-nbd', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    })());
  const fail = async (detail: string, cause?: unknown): Promise<never> => {
    await stop();
    throw new ImageOperationFailed('serve image over NBD', image, detail, cause);
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const outcome = await Promise.race([greets(socket), exited.then(() => 'exited' as const), spawnError]);
    if (outcome === true) return { listen: { transport: 'unix', socket }, stop };
    if (outcome instanceof Error) return fail(outcome.message, outcome);
    if (outcome === 'exited' || child.exitCode !== null || child.signalCode !== null) {
      const last = stderr.trim().split('\n').pop()?.replace(/^qemu-nbd: /, '');
      return fail(last || `qemu-nbd exited with ${child.exitCode ?? child.signalCode}`);
    }
    if (Date.now() > deadline) return fail(`qemu-nbd did not serve it within ${START_TIMEOUT_MS / 1000} s`);
    // Until its socket exists; once it does, greets() waits for the greeting itself.
    await new Promise((r) => setTimeout(r, 5));
  }
}

function greets(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socket);
    let got = Buffer.alloc(0);
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 8) done(got.subarray(0, 8).toString('latin1') === 'NBDMAGIC');
    });
    s.once('error', () => done(false));
    s.once('end', () => done(false));
    s.setTimeout(1000, () => done(false));
  });
}
