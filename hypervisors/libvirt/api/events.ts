/**
 * Connection-closed notices on the main thread, from the one event loop thread of the process
 * (event-loop.ts). That thread must have registered libvirt's event loop before any connection
 * opens (keepalive needs it), so `started()` is awaited before each open.
 */
import type { Worker } from 'node:worker_threads';
import type { Handle } from './native.js';
import type { LoopMessage, LoopRequest } from './event-loop.js';
import { startThread } from './thread-file.js';

class LibvirtEvents {
  private loop: Promise<Worker> | undefined;
  /** What to do when a watched connection closes, by connection. */
  private readonly onClosed = new Map<Handle, () => void>();
  private nextId = 1;
  private readonly waiting = new Map<number, () => void>();
  /** The thread keeps the process alive only while somebody waits on it (its start, a request). */
  private holds = 0;

  started(): Promise<Worker> {
    this.loop ??= new Promise<Worker>((resolve, reject) => {
      const worker = startThread('event-loop', import.meta.url);
      worker.on('message', (message: LoopMessage) => {
        if (message.kind === 'ready') {
          this.release(worker);
          resolve(worker);
        } else if (message.kind === 'done') {
          const waiter = this.waiting.get(message.id);
          this.waiting.delete(message.id);
          waiter?.();
        } else {
          const onClosed = this.onClosed.get(message.conn);
          this.onClosed.delete(message.conn);
          onClosed?.();
        }
      });
      worker.on('error', (err) => {
        this.loop = undefined;
        this.holds = 0;
        reject(err);
      });
      // Adding a 'message' listener has ref'd the worker: that is the hold on its start.
      this.holds++;
    });
    return this.loop;
  }

  /** Reports the connection's closing to `onClosed`. */
  watch(conn: Handle, onClosed: () => void): Promise<void> {
    this.onClosed.set(conn, onClosed);
    return this.ask({ id: this.nextId++, watch: conn });
  }

  unwatch(conn: Handle): Promise<void> {
    this.onClosed.delete(conn);
    return this.ask({ id: this.nextId++, unwatch: conn });
  }

  private async ask(request: LoopRequest): Promise<void> {
    const worker = await this.started();
    if (this.holds++ === 0) worker.ref();
    try {
      await new Promise<void>((resolve) => {
        this.waiting.set(request.id, resolve);
        worker.postMessage(request);
      });
    } finally {
      this.release(worker);
    }
  }

  private release(worker: Worker): void {
    if (--this.holds === 0) worker.unref();
  }
}

export const libvirtEvents = new LibvirtEvents();
