/**
 * Serves one image over NBD with qemu-nbd on a unix socket in a private temp directory, so the
 * receiver writes into a pending overlay (and drills read a point) with the project's NBD client.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageOperationFailed } from '../errors.js';

const START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

export interface ServedImage {
  listen: { transport: 'unix'; socket: string };
  stop(): Promise<void>;
}

export async function serveImage(image: string, options: { readOnly?: boolean; format?: 'qcow2' | 'raw' } = {}): Promise<ServedImage> {
  const dir = await mkdtemp(join(tmpdir(), 'vmdr-nbd-'));
  const socket = join(dir, 'nbd.sock');
  const args = [
    `--socket=${socket}`,
    `--format=${options.format ?? 'qcow2'}`,
    '--cache=writeback',
    '--discard=unmap',
    '--detect-zeroes=off',
    '--persistent',
    '--shared=4',
  ];
  if (options.readOnly) args.push('--read-only');
  args.push(image);
  // --persistent keeps qemu-nbd running when its client goes, so it would outlive a receiver killed
  // with -9 and keep the overlay's backing chain locked: the next retention merge (and so the
  // restarted receiver's recovery) fails on the lock. PR_SET_PDEATHSIG (util-linux setpriv, which
  // then execs qemu-nbd in the same process) makes the kernel kill it with its parent.
  const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', 'qemu-nbd', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let exitedEarly = false;
  void exited.then(() => (exitedEarly = true));
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
    const outcome = await Promise.race([
      canConnect(socket),
      exited.then(() => 'exited' as const),
      spawnError,
    ]);
    if (outcome === true) return { listen: { transport: 'unix', socket }, stop };
    if (outcome instanceof Error) return fail(outcome.message, outcome);
    if (outcome === 'exited' || exitedEarly) {
      const last = stderr.trim().split('\n').pop()?.replace(/^qemu-nbd: /, '');
      return fail(last || `qemu-nbd exited with ${child.exitCode ?? child.signalCode}`);
    }
    if (Date.now() > deadline) return fail(`socket ${socket} did not accept connections within ${START_TIMEOUT_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * qemu-nbd creates its socket before it opens the image, so a connection alone proves nothing:
 * the server is ready once it greets (the "NBDMAGIC" of the newstyle handshake).
 */
function canConnect(socket: string): Promise<boolean> {
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
