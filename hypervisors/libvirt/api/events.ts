/**
 * libvirt's notices on the main thread: each VM's lifecycle on a watched connection (started,
 * stopped, ...) and the connection's closing (libvirtd went away, or the socket failed); and the
 * outcome of each VM start handed to the shim's own thread (pool.ts). The C shim
 * (shim/vmdr-events.c) writes them from libvirt's threads as fixed-size records to a pipe,
 * which this reads like a socket; nothing here calls libvirt, and libvirt calls no JavaScript.
 * A connection is watched by the open procedure itself (procedures.ts), so no event between the
 * open and the first call is missed, and it is unwatched by the close procedure before it closes.
 */
import { Socket } from 'node:net';
import type { FailureDetail } from './procedures.js';

/** One VM's change of state, as libvirt reports it (virDomainEventType and its detail). */
export interface LifecycleEvent {
  uuid: string;
  name: string;
  /** VIR_DOMAIN_EVENT (codes.ts): DEFINED, STARTED, STOPPED, ... */
  event: number;
  /** What kind of that event (for STOPPED: shutdown, destroyed, crashed, ...). */
  detail: number;
  /** When libvirt reported it to this process (ms since the epoch, to the microsecond). */
  at: number;
}

export interface Watcher {
  lifecycle(event: LifecycleEvent): void;
  /** `reason` is a virConnectCloseReason (CLOSE_REASONS). */
  closed(reason: number): void;
}

/** A start handed to the shim's thread: done, or libvirt's failure. */
export type StartOutcome = { started: true } | { failure: FailureDetail };

/** struct vmdr_event_record in shim/vmdr-events.c. */
const RECORD = { bytes: 512, watch: 0, time: 8, kind: 16, event: 20, detail: 24, domain: 28, uuid: 32, uuidBytes: 40, name: 72, nameBytes: 440 } as const;
const KIND = { LIFECYCLE: 1, CLOSED: 2, STARTED: 3 } as const;

function cString(record: Buffer, at: number, bytes: number): string {
  const end = record.indexOf(0, at);
  return record.toString('utf8', at, end < 0 || end > at + bytes ? at + bytes : end);
}

class LibvirtEvents {
  private reader: Socket | undefined;
  private readonly watchers = new Map<number, Watcher>();
  /** Who waits for the outcome of each start handed to the shim, by its request number. */
  private readonly starts = new Map<number, (outcome: StartOutcome) => void>();
  /** The start of a record whose rest has not been read yet. */
  private partial: Buffer = Buffer.alloc(0);

  /**
   * Sends the records of watch number `watch` (from the open procedure) to `watcher` from now on;
   * `pipe` is the shim's pipe the open procedure returned.
   */
  watch(pipe: number, watch: number, watcher: Watcher): void {
    this.listen(pipe);
    this.watchers.set(watch, watcher);
  }

  /** Whether the pipe is read: a start may be handed to the shim only then. */
  get listening(): boolean {
    return this.reader !== undefined;
  }

  /** Calls `settle` once, with the outcome of the start handed to the shim as number `request`. */
  onStartOutcome(request: number, settle: (outcome: StartOutcome) => void): void {
    this.starts.set(request, settle);
  }

  /** For a start that was never handed over after all. */
  forgetStart(request: number): void {
    this.starts.delete(request);
  }

  /** Records of `watch` still in the pipe are dropped. */
  unwatch(watch: number): void {
    this.watchers.delete(watch);
  }

  /** Reads the shim's pipe (the open procedure returns it), once per process. */
  listen(pipe: number): void {
    if (this.reader || pipe < 0) return;
    const reader = new Socket({ fd: pipe, readable: true, writable: false });
    // Notices never keep the process alive: whoever waits for one holds a timer of its own.
    reader.unref();
    reader.on('data', (chunk: Buffer) => this.read(chunk));
    // The pipe does not fail while the process lives; if it did, waits would fall back to asking
    // the VM's state and calls would find their connection closed themselves.
    reader.on('error', () => undefined);
    this.reader = reader;
  }

  private read(chunk: Buffer): void {
    const data = this.partial.length > 0 ? Buffer.concat([this.partial, chunk]) : chunk;
    let at = 0;
    for (; at + RECORD.bytes <= data.length; at += RECORD.bytes) this.dispatch(data.subarray(at, at + RECORD.bytes));
    this.partial = Buffer.from(data.subarray(at));
  }

  private dispatch(record: Buffer): void {
    const kind = record.readInt32LE(RECORD.kind);
    const event = record.readInt32LE(RECORD.event);
    const number = Number(record.readBigUInt64LE(RECORD.watch));
    if (kind === KIND.STARTED) {
      const settle = this.starts.get(number);
      this.starts.delete(number);
      settle?.(
        event === 0
          ? { started: true }
          : {
              failure: {
                call: cString(record, RECORD.uuid, RECORD.uuidBytes),
                code: record.readInt32LE(RECORD.detail),
                domain: record.readInt32LE(RECORD.domain),
                message: cString(record, RECORD.name, RECORD.nameBytes).trim() || 'the VM did not start and libvirt gave no reason',
              },
            },
      );
      return;
    }
    const watcher = this.watchers.get(number);
    if (!watcher) return;
    if (kind === KIND.CLOSED) watcher.closed(event);
    else if (kind === KIND.LIFECYCLE) {
      watcher.lifecycle({
        uuid: cString(record, RECORD.uuid, RECORD.uuidBytes),
        name: cString(record, RECORD.name, RECORD.nameBytes),
        event,
        detail: record.readInt32LE(RECORD.detail),
        at: Number(record.readBigUInt64LE(RECORD.time)) / 1000,
      });
    }
  }
}

/**
 * One reader of the shim's pipe per process, even if this module is loaded twice (two readers of
 * one pipe would each take records the other's watchers wait for).
 */
const ONE_PER_PROCESS = Symbol.for('vmdr.libvirtEvents');
export const libvirtEvents: LibvirtEvents = ((globalThis as Record<symbol, unknown>)[ONE_PER_PROCESS] ??= new LibvirtEvents()) as LibvirtEvents;
