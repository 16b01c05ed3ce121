/**
 * A shut-off VM's disks exported read-only over NBD straight from their image files: one qemu-nbd
 * per disk on a unix socket in a private temp dir, export named after the disk, optionally with a
 * persistent bitmap's `qemu:dirty-bitmap:<name>` context. This is what a sync reads when there is
 * no QEMU to run a pull backup.
 *
 * Separate from the DR side's serveImage (plugin/replication/replica/qemu-nbd.ts) because adapters
 * may not import plugin/, and because the two differ in what matters: this one never writes, names
 * its exports, carries a bitmap, and reads a source image the VM may want back at any moment.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const START_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

export interface OfflineDisk {
  target: string;
  image: string;
  format: 'qcow2' | 'raw';
  /** A persistent bitmap of the image to export as `qemu:dirty-bitmap:<bitmap>`. */
  bitmap?: string;
}

export interface OfflineExports {
  sockets: Map<string, string>;
  /** Stops every qemu-nbd (SIGTERM, SIGKILL after 5 s) and removes the temp dir. Safe twice. */
  stop(): Promise<void>;
}

/** Whether `image` holds persistent bitmap `name` that QEMU saved properly (not left 'in-use'). */
export async function hasUsableBitmap(image: string, name: string): Promise<boolean> {
  const { stdout } = await exec('qemu-img', ['info', '--output=json', '-U', image]);
  const info = JSON.parse(stdout) as { 'format-specific'?: { data?: { bitmaps?: { name: string; flags: string[] }[] } } };
  const bitmap = info['format-specific']?.data?.bitmaps?.find((b) => b.name === name);
  return bitmap !== undefined && !bitmap.flags.includes('in-use');
}

export async function exportImagesOffline(disks: OfflineDisk[]): Promise<OfflineExports> {
  const dir = await mkdtemp(join(tmpdir(), 'vmdr-offline-'));
  const sockets = new Map(disks.map((d) => [d.target, join(dir, `${d.target}.sock`)]));
  const children: ReturnType<typeof spawn>[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await Promise.all(children.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }));
      await rm(dir, { recursive: true, force: true });
    })());
  try {
    await Promise.all(disks.map(async (d) => {
      const args = [`--socket=${sockets.get(d.target)}`, `--format=${d.format}`, `--export-name=${d.target}`, '--read-only', '--persistent', '--shared=4'];
      if (d.bitmap) args.push(`--bitmap=${d.bitmap}`);
      // --persistent outlives its clients; the kernel's parent-death signal (setpriv execs qemu-nbd
      // in its own process) keeps a killed vmdr from leaving the image locked against the VM.
      const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', 'qemu-nbd', ...args, d.image], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      await ready(child, sockets.get(d.target)!, d.image);
    }));
  } catch (err) {
    await stop();
    throw err;
  }
  return { sockets, stop };
}

/** Resolves once qemu-nbd greets on `socket` (it creates the socket before it opens the image). */
async function ready(child: ReturnType<typeof spawn>, socket: string, image: string): Promise<void> {
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const failed = new Promise<string>((resolve) => {
    child.once('error', (err) => resolve(err.message));
    child.once('exit', (code, sig) => resolve(stderr.trim().split('\n').pop()?.replace(/^qemu-nbd: /, '') || `qemu-nbd exited with ${code ?? sig}`));
  });
  for (const deadline = Date.now() + START_TIMEOUT_MS; Date.now() < deadline; await new Promise((r) => setTimeout(r, 20))) {
    const outcome = await Promise.race([greets(socket), failed]);
    if (outcome === true) return;
    if (typeof outcome === 'string') throw new Error(`qemu-nbd could not export ${image}: ${outcome}`);
  }
  throw new Error(`qemu-nbd did not serve ${image} within ${START_TIMEOUT_MS / 1000} s`);
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
