/**
 * The long operations the API started (a sync now, later failovers and drills): each answers 202
 * with an id at once, and can then be polled or followed as a stream of the same progress events
 * the CLI draws. They live in the daemon's memory: what outlives the daemon is each operation's own
 * record (the sync run, the failover journal) and the audit record of the request that started it.
 *
 * Everything is bounded: operations running at once, finished ones remembered, events kept per
 * operation (the oldest dropped first, their number counted), listeners per operation.
 */
import { randomUUID } from 'node:crypto';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';

export type OperationState = 'running' | 'succeeded' | 'failed';

export interface OperationError {
  code: string;
  message: string;
  /** The names the error concerns (protection, vm, site), as in the CLI's JSON. */
  [name: string]: unknown;
}

/** One line of an operation's stream: a progress event, or its end. */
export type OperationEvent =
  | { event: 'progress'; at: string; progress: Progress }
  | { event: 'succeeded'; at: string; result: unknown }
  | { event: 'failed'; at: string; error: OperationError };

export interface Operation {
  id: string;
  kind: string;
  /** What it works on, by name (the protection, the plan). */
  subject: Record<string, string>;
  /** The tenant whose object it works on: a tenant's token sees only its own tenant's operations. */
  tenant?: string;
  /** Who asked: the token's id. */
  startedBy: string;
  state: OperationState;
  startedAt: string;
  endedAt?: string;
  result?: unknown;
  error?: OperationError;
  /** The newest events (at most EVENTS_KEPT), and how many older ones were dropped. */
  events: OperationEvent[];
  eventsDropped: number;
}

export interface OperationLimits {
  running: number;
  finishedKept: number;
  eventsKept: number;
  listeners: number;
}

export const DEFAULT_OPERATION_LIMITS: OperationLimits = { running: 32, finishedKept: 200, eventsKept: 500, listeners: 16 };

type Listener = (event: OperationEvent) => void;

export interface OperationStart {
  kind: string;
  subject: Record<string, string>;
  tenant?: string;
  startedBy: string;
  /** The work: it reports progress and ends with the operation's result; `signal` aborts when the daemon stops. */
  work: (tools: { signal: AbortSignal; onProgress: (p: Progress) => void }) => Promise<unknown>;
  /** How a failure is told to the caller: a VmdrError by its code; anything else without this host's detail. */
  describeError: (err: unknown) => OperationError;
}

export class Operations {
  private readonly all = new Map<string, Operation>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly running = new Set<Promise<void>>();
  private readonly stop = new AbortController();
  private readonly limits: OperationLimits;

  constructor(limits: Partial<OperationLimits> = {}) {
    this.limits = { ...DEFAULT_OPERATION_LIMITS, ...limits };
  }

  start(spec: OperationStart): Operation {
    if (this.running.size >= this.limits.running) {
      throw new VmdrError('DAEMON_BUSY', `vmdr serve runs ${this.limits.running} operations already; try again when one ends`, { userError: false });
    }
    const op: Operation = {
      id: `op-${randomUUID()}`,
      kind: spec.kind,
      subject: spec.subject,
      ...(spec.tenant ? { tenant: spec.tenant } : {}),
      startedBy: spec.startedBy,
      state: 'running',
      startedAt: new Date().toISOString(),
      events: [],
      eventsDropped: 0,
    };
    this.all.set(op.id, op);
    const done = spec
      .work({ signal: this.stop.signal, onProgress: (progress) => this.emit(op, { event: 'progress', at: new Date().toISOString(), progress }) })
      .then(
        (result) => this.end(op, { event: 'succeeded', at: new Date().toISOString(), result }),
        (err: unknown) => this.end(op, { event: 'failed', at: new Date().toISOString(), error: spec.describeError(err) }),
      );
    this.running.add(done);
    void done.finally(() => this.running.delete(done));
    return op;
  }

  get(id: string): Operation | undefined {
    return this.all.get(id);
  }

  list(): Operation[] {
    return [...this.all.values()];
  }

  /**
   * Calls `listener` with each event from now on (the caller sends the kept ones first); returns
   * the unsubscribe, or undefined when the operation has ended (nothing more will come) or has
   * as many listeners as it may.
   */
  subscribe(id: string, listener: Listener): (() => void) | undefined {
    const op = this.all.get(id);
    if (!op || op.state !== 'running') return undefined;
    const set = this.listeners.get(id) ?? new Set<Listener>();
    if (set.size >= this.limits.listeners) {
      throw new VmdrError('DAEMON_BUSY', `operation ${id} is followed by ${this.limits.listeners} clients already`, { userError: false });
    }
    set.add(listener);
    this.listeners.set(id, set);
    return () => set.delete(listener);
  }

  /** Aborts what runs and waits for it to end (the daemon is stopping). */
  async close(): Promise<void> {
    this.stop.abort();
    await Promise.allSettled([...this.running]);
  }

  private emit(op: Operation, event: OperationEvent): void {
    op.events.push(event);
    if (op.events.length > this.limits.eventsKept) {
      op.events.shift();
      op.eventsDropped++;
    }
    for (const listener of this.listeners.get(op.id) ?? []) listener(event);
  }

  private end(op: Operation, event: Extract<OperationEvent, { event: 'succeeded' | 'failed' }>): void {
    op.state = event.event;
    op.endedAt = event.at;
    if (event.event === 'succeeded') op.result = event.result;
    else op.error = event.error;
    this.emit(op, event);
    this.listeners.delete(op.id);
    this.forgetOldest();
  }

  private forgetOldest(): void {
    const finished = [...this.all.values()].filter((o) => o.state !== 'running');
    for (const old of finished.slice(0, Math.max(0, finished.length - this.limits.finishedKept))) this.all.delete(old.id);
  }
}
