/**
 * Runs the binding's procedures on a few worker threads. Why threads and not koffi's async calls:
 * libvirt keeps a failure's error per thread, so the call and its virGetLastError() must run on
 * the same thread, which an async call on libuv's pool cannot promise. Each thread runs one
 * procedure at a time; up to MAX_THREADS run at once (a plan starts its VMs in parallel), more
 * wait their turn. A procedure that does not return in time is given up: its caller gets
 * LibvirtCallTimedOut, and its thread, still inside libvirt, leaves the pool until libvirt
 * answers. A host that leaves MAX_GIVEN_UP_PER_HOST calls unanswered is sent no more until one of
 * them comes back: its further calls fail at once, so a hung libvirtd holds at most that many
 * threads, and those its calls already running when it stopped answering (MAX_THREADS at most).
 *
 * A VM start is not held on a thread: its procedure hands the start to a thread of the C shim and
 * returns, and the outcome comes through the shim's pipe (events.ts). Six VMs of a plan starting
 * at once so need no six Node workers (each ~45 ms of CPU to start, spent while the failover is on
 * the clock). Such a start that does not come back in time is given up like a call, and counts
 * among its host's unanswered calls until its outcome comes.
 */
import type { Worker } from 'node:worker_threads';
import type { LibraryFailure } from '../../errors.js';
import type { FailureDetail, OpenedConnection, Procedures } from './procedures.js';
import { VIR_ERR, VIR_FROM } from './codes.js';
import { libvirtEvents, type StartOutcome } from './events.js';
import { startThread } from './thread-file.js';
import type { Reply, Request, ThreadMessage } from './worker.js';

const MAX_THREADS = 8;
const GROW_AFTER_MS = 20;
/** Calls one host may leave inside libvirt after they were given up: threads (~10 MB each) and starts handed to the shim. */
export const MAX_GIVEN_UP_PER_HOST = 4;
/**
 * A call's time starts when its thread has loaded (a fresh thread takes tens of ms, seconds under
 * tsx on a busy machine): a thread's start is not libvirt's silence. This bounds a start that hangs.
 */
const START_ALLOWANCE_MS = 30_000;

/** libvirt refused or failed the call; `detail` has libvirt's code, domain and message. */
export class LibvirtCallFailed extends Error {
  constructor(readonly detail: FailureDetail) {
    super(detail.message);
    this.name = 'LibvirtCallFailed';
  }

  /** Kept by the VmdrError this becomes, and shown in the CLI's --json error. */
  get libraryFailure(): LibraryFailure {
    return { library: 'libvirt', code: this.detail.code, domain: this.detail.domain };
  }
}

export class LibvirtCallTimedOut extends Error {
  constructor(
    readonly procedure: string,
    readonly timeoutMs: number,
    /** Set when the call was not sent: this many earlier calls to the same host are still unanswered. */
    readonly unanswered?: number,
  ) {
    super(
      unanswered === undefined
        ? `libvirt did not answer ${procedure} within ${timeoutMs / 1000} s`
        : `libvirt has not answered ${unanswered} earlier calls to this host; ${procedure} was not sent`,
    );
    this.name = 'LibvirtCallTimedOut';
  }
}

/** Procedures whose blocking part runs on a thread of the C shim, the procedure's last argument numbering its outcome. */
const HANDED_OFF: ReadonlySet<string> = new Set(['startDomain']);

interface HandOff {
  host: unknown;
  /** Its caller was given LibvirtCallTimedOut; it is still inside libvirt. */
  givenUp: boolean;
}

interface Job {
  request: Request;
  timeoutMs: number;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

interface Thread {
  worker: Worker;
  ready?: boolean;
  job?: Job;
  timer?: NodeJS.Timeout;
}

export type ProcedureName = keyof Procedures;
export type ProcedureArgs<K extends ProcedureName> = Parameters<Procedures[K]>;
export type ProcedureResult<K extends ProcedureName> = ReturnType<Procedures[K]>;

class CallPool {
  private readonly threads = new Set<Thread>();
  /** Threads whose call was given up and is still inside libvirt. */
  private readonly givenUp = new Set<Thread>();
  /** Connections being closed: calls on them are refused (see `closeWhenUnused`). */
  private readonly retired = new Set<unknown>();
  /** Who waits for a connection to be unused (see `closeWhenUnused`). */
  private readonly quietWaiters = new Set<() => void>();
  /** The URI each open connection was opened with: given-up calls are counted by host. */
  private readonly hosts = new Map<unknown, unknown>();
  private readonly queue: Job[] = [];
  private growing: NodeJS.Timeout | undefined;
  private nextId = 1;
  /** Starts handed to the shim whose outcome has not come, by request number. */
  private readonly handedOff = new Map<number, HandOff>();
  private nextHandOff = 1;

  run<K extends ProcedureName>(name: K, args: ProcedureArgs<K>, timeoutMs: number): Promise<ProcedureResult<K>> {
    if (this.retired.has(args[0])) {
      return Promise.reject(new LibvirtCallFailed({ call: String(name), code: VIR_ERR.INTERNAL_ERROR, domain: VIR_FROM.RPC, message: 'the connection is being closed' }));
    }
    if (HANDED_OFF.has(name) && libvirtEvents.listening) return this.handOff(name, args, timeoutMs) as Promise<ProcedureResult<K>>;
    return this.enqueue(name, args, timeoutMs);
  }

  /**
   * Runs the procedure with a request number as its last argument; it returns once the shim's
   * thread has the work, and the call ends with that thread's outcome, given up after `timeoutMs`.
   */
  private async handOff<K extends ProcedureName>(name: K, args: ProcedureArgs<K>, timeoutMs: number): Promise<void> {
    const request = this.nextHandOff++;
    const handOff: HandOff = { host: this.hostOf({ name, args }), givenUp: false };
    // Listened for before it is handed over: a start that fails at once may answer first.
    const outcome = new Promise<StartOutcome>((resolve) =>
      libvirtEvents.onStartOutcome(request, (o) => {
        this.handedOff.delete(request);
        resolve(o);
      }),
    );
    this.handedOff.set(request, handOff);
    try {
      await this.enqueue(name, [...args, request] as unknown as ProcedureArgs<K>, timeoutMs);
    } catch (err) {
      libvirtEvents.forgetStart(request);
      this.handedOff.delete(request);
      throw err;
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        handOff.givenUp = true;
        reject(new LibvirtCallTimedOut(String(name), timeoutMs));
      }, timeoutMs);
    });
    try {
      const o = await Promise.race([outcome, late]);
      if ('failure' in o) throw new LibvirtCallFailed(o.failure);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The host a call goes to: the URI it opens, or the one its connection was opened with. */
  private hostOf(request: Pick<Request, 'name' | 'args'>): unknown {
    const first = request.args[0];
    return request.name === 'open' ? first : (this.hosts.get(first) ?? first);
  }

  private unansweredOn(host: unknown): number {
    let count = 0;
    for (const t of this.givenUp) if (t.job && this.hostOf(t.job.request) === host) count++;
    for (const h of this.handedOff.values()) if (h.givenUp && h.host === host) count++;
    return count;
  }

  /**
   * A call to a host that holds MAX_GIVEN_UP_PER_HOST calls unanswered fails at once, unsent
   * (checked as it leaves the queue, so calls queued before the host went silent are held too).
   * Closing is always sent: it waits for no call, and a connection left open would leak.
   */
  private refused(job: Job): boolean {
    if (job.request.name === 'close') return false;
    const unanswered = this.unansweredOn(this.hostOf(job.request));
    if (unanswered < MAX_GIVEN_UP_PER_HOST) return false;
    job.reject(new LibvirtCallTimedOut(String(job.request.name), job.timeoutMs, unanswered));
    return true;
  }

  /** The call threads the process holds now (given-up ones not counted). */
  get threadCount(): number {
    return this.threads.size;
  }

  /** Whether a call on `conn` is queued, running, or given up on and still inside libvirt. */
  inUse(conn: unknown): boolean {
    return [...this.threads, ...this.givenUp].some((t) => t.job?.request.args[0] === conn) || this.queue.some((j) => j.request.args[0] === conn);
  }

  private enqueue<K extends ProcedureName>(name: K, args: ProcedureArgs<K>, timeoutMs: number): Promise<ProcedureResult<K>> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request: { id: this.nextId++, name, args }, timeoutMs, resolve: resolve as (v: unknown) => void, reject });
      this.dispatch();
    });
  }

  /**
   * Closes connection `conn` once nothing uses it: no call on it queued, running, or given up on
   * and still inside libvirt (virConnectClose frees the connection under such a call, and the
   * process crashes). From now on a call on it is refused without being sent (as libvirt refuses
   * a call on a closed socket, so callers open a fresh connection and send it there). Waits as long
   * as libvirt holds a call given up on: such calls end when libvirtd answers or the socket fails,
   * and there are at most MAX_GIVEN_UP_PER_HOST of them.
   */
  async closeWhenUnused(conn: unknown): Promise<void> {
    this.retired.add(conn);
    await this.unused(conn);
    try {
      await this.enqueue('close', [conn] as ProcedureArgs<'close'>, 10_000);
    } finally {
      // libvirt may hand the same address to a connection opened later.
      this.retired.delete(conn);
      this.hosts.delete(conn);
    }
  }

  private unused(conn: unknown): Promise<void> {
    if (!this.inUse(conn)) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.inUse(conn)) return;
        this.quietWaiters.delete(check);
        resolve();
      };
      this.quietWaiters.add(check);
    });
  }

  /**
   * Starts threads ahead of the calls, up to `count` in all, so their start-up (tens of ms of CPU
   * each) overlaps other work rather than the calls they will run (VMs starting in parallel).
   */
  warm(count = 1): void {
    const want = Math.min(count, MAX_THREADS);
    while (this.threads.size < want) this.spawn();
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      if (this.refused(this.queue[0]!)) {
        this.queue.shift();
        continue;
      }
      const idle = [...this.threads].find((t) => !t.job) ?? (this.threads.size === 0 ? this.spawn() : undefined);
      if (!idle) {
        if (this.threads.size < MAX_THREADS) this.growSoon();
        return;
      }
      this.assign(idle, this.queue.shift()!);
    }
  }

  /**
   * Most calls return in under a millisecond, so threads are added only for calls that have waited
   * GROW_AFTER_MS behind busy ones (VMs starting, a backup beginning): a CLI's burst of reads does
   * not start eight threads (each costs a few tens of ms of CPU to start and load libvirt).
   */
  private growSoon(): void {
    this.growing ??= setTimeout(() => {
      this.growing = undefined;
      const add = Math.min(this.queue.length, MAX_THREADS - this.threads.size);
      for (let i = 0; i < add; i++) this.spawn();
      this.dispatch();
    }, GROW_AFTER_MS);
  }

  private spawn(): Thread {
    const thread: Thread = { worker: startThread('worker', import.meta.url) };
    thread.worker.on('message', (message: ThreadMessage) => ('ready' in message ? this.started(thread) : this.settle(thread, message)));
    // The thread could not load libvirt (or died): its job fails with the reason, and the pool
    // makes a fresh thread for the next one.
    thread.worker.on('error', (err) => this.lose(thread, err));
    thread.worker.on('exit', () => this.lose(thread, new Error('a libvirt call thread exited')));
    // After the listeners: adding a 'message' listener refs the worker again.
    thread.worker.unref();
    this.threads.add(thread);
    return thread;
  }

  private assign(thread: Thread, job: Job): void {
    thread.job = job;
    // Only a thread with work keeps the process alive.
    thread.worker.ref();
    this.startClock(thread, job, job.timeoutMs + (thread.ready ? 0 : START_ALLOWANCE_MS));
    thread.worker.postMessage(job.request);
  }

  private started(thread: Thread): void {
    thread.ready = true;
    if (thread.job) this.startClock(thread, thread.job, thread.job.timeoutMs);
  }

  private startClock(thread: Thread, job: Job, ms: number): void {
    clearTimeout(thread.timer);
    thread.timer = setTimeout(() => {
      job.reject(new LibvirtCallTimedOut(String(job.request.name), job.timeoutMs));
      this.threads.delete(thread);
      this.givenUp.add(thread);
      thread.worker.unref();
      this.dispatch();
    }, ms);
  }

  private settle(thread: Thread, reply: Reply): void {
    const job = thread.job;
    clearTimeout(thread.timer);
    thread.job = undefined;
    this.notifyQuiet();
    const late = !this.threads.has(thread);
    if (late) {
      // It answered after its caller gave up on it: back to work, if the pool has room.
      this.givenUp.delete(thread);
      // Nobody holds a connection opened too late: it is closed at once.
      if (job?.request.name === 'open' && 'value' in reply) void this.enqueue('close', [(reply.value as OpenedConnection).conn], 10_000).catch(() => undefined);
      if (this.threads.size >= MAX_THREADS) {
        void thread.worker.terminate();
        return;
      }
      this.threads.add(thread);
    }
    thread.worker.unref();
    if (!late && job && job.request.id === reply.id) {
      if ('failure' in reply) job.reject(new LibvirtCallFailed(reply.failure));
      else {
        if (job.request.name === 'open') this.hosts.set((reply.value as OpenedConnection).conn, job.request.args[0]);
        job.resolve(reply.value);
      }
    }
    this.dispatch();
  }

  private lose(thread: Thread, err: Error): void {
    const given = this.givenUp.delete(thread);
    if (!this.threads.delete(thread) && !given) return;
    clearTimeout(thread.timer);
    const job = thread.job;
    thread.job = undefined;
    this.notifyQuiet();
    if (given) return;
    job?.reject(err);
    this.dispatch();
  }

  private notifyQuiet(): void {
    for (const check of [...this.quietWaiters]) check();
  }
}

/** One pool for the process: every connection's calls share its threads. */
export const callPool = new CallPool();
