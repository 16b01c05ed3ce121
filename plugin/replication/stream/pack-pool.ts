/**
 * Worker threads that pack data frames (CRC, zstd; pack.ts) off the main thread, which meanwhile
 * reads NBD replies and encrypts the HTTPS body: zstd alone held the sender's main thread for
 * most of a full sync (about 130 MiB/s of log-like text per core here). One pool per process,
 * started by a cycle with enough data to pack (startPackWorkersFor); its threads do not keep the
 * process alive when idle, and until one is ready (or when none can start) the caller packs.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker, type Transferable } from 'node:worker_threads';
import { PackWorkerFailed } from './errors.js';
import type { Packed } from './pack.js';

export interface PackJob {
  id: number;
  data: Uint8Array;
  level: number;
}

/** A job's answer; a worker first says 'ready' once it has loaded. */
export type PackReply = ({ id: number } & Omit<Packed, 'payload'> & { payload: Uint8Array }) | { id: number; error: string };

/**
 * The memory of `view` to move to the other thread, when the view is all of it. A view into a
 * larger block (Node's pool of small Buffers, a slice of a bigger read) is copied instead:
 * moving its block would take the rest of it away from whoever else holds it.
 */
export function movable(view: Uint8Array): Transferable[] {
  const whole = view.byteOffset === 0 && view.byteLength === view.buffer.byteLength && !(view.buffer instanceof SharedArrayBuffer);
  return whole ? [view.buffer as ArrayBuffer] : [];
}

/** Moves or copies: after the call the caller must not use `data`. */
function owned(data: Buffer): Uint8Array {
  return movable(data).length > 0 ? data : new Uint8Array(data);
}

// Worker entries are loaded by path; from sources (tsx, the tests) the worker registers tsx first.
const fromSource = import.meta.url.endsWith('.ts');
const ENTRY = new URL(fromSource ? './pack-worker.ts' : './pack-worker.js', import.meta.url).href;
const TSX = fromSource ? tsxApi() : null;
const BOOT = `const { workerData: w } = require('node:worker_threads');
(w.tsx ? import(w.tsx).then((api) => api.register()) : Promise.resolve()).then(() => import(w.entry));`;

/** tsx's ESM API, as its package exports it (its CommonJS twin cannot load from an eval'd worker). */
function tsxApi(): string {
  const require = createRequire(import.meta.url);
  const manifest = require.resolve('tsx/package.json');
  const exported = (require(manifest) as { exports: Record<string, { import: { default: string } }> }).exports['./esm/api']!.import.default;
  return pathToFileURL(join(dirname(manifest), exported)).href;
}

interface Pending {
  resolve(p: Packed): void;
  reject(err: Error): void;
}

class PackWorker {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  /** It has loaded zstd and answered: jobs go to it from now on. */
  ready = false;

  constructor(onGone: (w: PackWorker) => void) {
    this.worker = new Worker(BOOT, { eval: true, workerData: { entry: ENTRY, tsx: TSX } });
    this.worker.on('message', (reply: PackReply | 'ready') => {
      if (reply === 'ready') {
        this.ready = true;
        for (const wake of waiting.splice(0)) wake(true);
        for (const w of workers) w.keepAlive();
        return;
      }
      const job = this.pending.get(reply.id);
      if (!job) return;
      this.settled(reply.id);
      if ('error' in reply) return job.reject(new PackWorkerFailed(reply.error));
      const { id: _, payload, ...packed } = reply;
      job.resolve({ ...packed, payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) });
    });
    const fail = (err: Error) => {
      onGone(this);
      for (const job of this.pending.values()) job.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', (err) => fail(new PackWorkerFailed(err.message)));
    this.worker.on('exit', (code) => fail(new PackWorkerFailed(`it exited with code ${code}`)));
    // After the listeners: a 'message' listener refs the worker again.
    this.worker.unref();
  }

  send(id: number, job: Pending, data: Buffer, level: number): void {
    this.pending.set(id, job);
    this.keepAlive();
    const view = owned(data);
    this.worker.postMessage({ id, data: view, level } satisfies PackJob, movable(view));
  }

  /** A thread with work, or one someone waits for, keeps the process alive; an idle one does not. */
  keepAlive(): void {
    if (this.pending.size > 0 || (!this.ready && waiting.length > 0)) this.worker.ref();
    else this.worker.unref();
  }

  private settled(id: number): void {
    this.pending.delete(id);
    this.keepAlive();
  }
}

/** One thread per core but one (the main thread's), at least one, at most four. */
const SIZE = Math.max(1, Math.min(4, availableParallelism() - 1));
const workers: PackWorker[] = [];
/** A worker died before it was ready (it cannot load zstd here): the pool stays closed, the caller packs. */
let unavailable = false;
let nextId = 1;
const waiting: ((ready: boolean) => void)[] = [];

/**
 * Resolves true once a worker is ready (starting them if they are not), false if they cannot run
 * here; the process stays alive for it.
 */
export function packWorkersReady(): Promise<boolean> {
  startPackWorkers();
  if (workers.some((w) => w.ready)) return Promise.resolve(true);
  if (unavailable && workers.length === 0) return Promise.resolve(false);
  const ready = new Promise<boolean>((resolve) => waiting.push(resolve));
  for (const w of workers) w.keepAlive();
  return ready;
}

/**
 * Starts the workers if they are not up. A cycle calls it once it knows its data is worth them
 * (startPackWorkersFor), so they load while the first frames are read.
 */
export function startPackWorkers(): void {
  while (!unavailable && workers.length < SIZE) {
    workers.push(
      new PackWorker((gone) => {
        const at = workers.indexOf(gone);
        if (at >= 0) workers.splice(at, 1);
        if (!gone.ready) unavailable = true;
        if (workers.length === 0) for (const wake of waiting.splice(0)) wake(false);
      }),
    );
  }
}

/**
 * Below this much data a cycle packs in its own thread: a worker takes about 40 ms of CPU to load
 * on the lab machine, about what zstd needs for an incremental's 10 MiB (half of it text), and
 * the cycle would be over before the worker helped.
 */
const WORTH_WORKERS = 32 * 1024 * 1024;

/** Starts the workers when `dataBytes` are to be packed with zstd (see WORTH_WORKERS). */
export function startPackWorkersFor(dataBytes: number): void {
  if (dataBytes >= WORTH_WORKERS) startPackWorkers();
}

/**
 * `data` packed (pack.ts) on a worker thread, the least busy; undefined while no worker is ready
 * (none was started, or it is still loading) or when workers cannot run here: the caller packs
 * in its own thread then. Takes `data` over: its memory moves to the worker, and the caller must
 * not use it after the call (a raw frame's payload is the same bytes, handed back).
 */
export function packOffThread(data: Buffer, level: number): Promise<Packed> | undefined {
  const ready = workers.filter((w) => w.ready);
  if (ready.length === 0) return undefined;
  const worker = ready.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  const id = nextId++;
  return new Promise<Packed>((resolve, reject) => worker.send(id, { resolve, reject }, data, level));
}
