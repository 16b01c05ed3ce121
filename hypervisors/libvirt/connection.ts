/**
 * One connection to a libvirt host, through the binding in api/: opened on first use, watched for
 * its closing (libvirtd restarted) and opened afresh by the next call after that, or after a call
 * on it got no answer in time (libvirtd hung, or a remote host gone silent: libvirt's keepalive,
 * which would notice, crashes the process; see api/procedures.ts `open`), and watched for its VMs'
 * lifecycle events (`onLifecycle`). Every call goes through `call`, which bounds it in time and
 * turns libvirt's failures into vmdr's typed errors naming this host.
 */
import { InvalidPowerState, VmdrError } from '../errors.js';
import type { PowerState } from '../types.js';
import { libvirtEvents, type LifecycleEvent } from './api/events.js';
import type { Handle } from './api/native.js';
import { callPool, LibvirtCallTimedOut, type ProcedureArgs, type ProcedureName, type ProcedureResult } from './api/pool.js';
import { isConnectionFailure, neverSent, translateLibvirtError, type LibvirtErrorContext } from './errors.js';
import { powerStateOf } from './power-states.js';

const OPEN_TIMEOUT_MS = 30_000;
export const DEFAULT_CALL_TIMEOUT_MS = 120_000;
/**
 * libvirtd serves at most max_client_requests calls of one connection at once (5 by default) and
 * holds the others back. A VM start is one call for as long as QEMU takes to launch (0.5-2 s
 * here), so a plan's six starts on one connection held every other call of the run behind them
 * (measured: a VM's identity check waited 1.9 s). Beyond this many at once, a start runs on a
 * connection of its own, opened for it (1.5 ms to this host's libvirtd) and closed after. Starts
 * a run announced (prepareStarts) all run on connections of their own, opened ahead: even two
 * starts on the shared connection left three of its five places to a group's health waits, whose
 * state reads then waited 0.3-0.5 s for a start to end (a traced 6-VM failover), and the call
 * pool added a thread (tens of ms of CPU each) for each of them.
 */
const STARTS_ON_SHARED_CONNECTION = 2;
/**
 * How long a connection opened ahead for a start (prepareStarts) waits for its start before it is
 * closed: a plan's groups start within a run, and a connection idle longer is better opened afresh.
 */
const SPARE_TTL_MS = 60_000;

/** Procedures that only read: one that failed on a connection closed under it is asked again on a fresh one. */
const READS: ReadonlySet<ProcedureName> = new Set<ProcedureName>([
  'isAlive',
  'capabilities',
  'describeAllDomains',
  'describeDomain',
  'describeDomainsNamed',
  'identifyDomain',
  'domainState',
  'domainXml',
  'diskCapacities',
  'screenshot',
  'listCheckpoints',
  'listCheckpointNames',
  'backupXml',
  'jobInfo',
  'describeAllNetworks',
  'describeNetwork',
]);

type Tail<T extends unknown[]> = T extends [unknown, ...infer R] ? R : never;

export interface CallContext extends Omit<LibvirtErrorContext, 'host'> {
  timeoutMs?: number;
  /**
   * The power state the VM must be in for this call. When the call fails and the VM is found in
   * another state, the failure is InvalidPowerState with the state it is in (libvirt's drivers
   * report this with different codes; the state itself is unambiguous).
   */
  requires?: 'running' | 'shutoff';
}

export class LibvirtConnection {
  private opening: Promise<Handle> | undefined;
  /** The events' watch number of each open handle. */
  private readonly watches = new Map<Handle, number>();
  private readonly lifecycleListeners = new Set<(event: LifecycleEvent) => void>();
  private readonly closedListeners = new Set<(reason: number) => void>();
  private startsOnShared = 0;
  /** Connections opened ahead for starts beyond STARTS_ON_SHARED_CONNECTION (prepareStarts). */
  private readonly spares: Promise<Handle | undefined>[] = [];

  constructor(
    readonly uri: string,
    /** Each call's bound unless it names its own (CallContext.timeoutMs). */
    readonly callTimeoutMs = DEFAULT_CALL_TIMEOUT_MS,
  ) {}

  /** The current handle, opening a connection when there is none. */
  open(): Promise<Handle> {
    callPool.warm();
    // A failed open is forgotten so the next call tries again (libvirtd may have been started since).
    this.opening ??= (async () => {
      const { conn, watch, events } = await callPool.run('open', [this.uri], Math.min(OPEN_TIMEOUT_MS, this.callTimeoutMs));
      // Read even when libvirt refused this connection's notices: the outcomes of VM starts come there too.
      libvirtEvents.listen(events);
      if (watch > 0) {
        this.watches.set(conn, watch);
        libvirtEvents.watch(events, watch, {
          lifecycle: (event) => {
            for (const listener of [...this.lifecycleListeners]) listener(event);
          },
          closed: (reason) => {
            void this.forget(conn);
            for (const listener of [...this.closedListeners]) listener(reason);
          },
        });
      }
      return conn;
    })().catch((err: unknown) => {
      this.opening = undefined;
      throw translateLibvirtError(err, { operation: 'connect', host: this.uri });
    });
    return this.opening;
  }

  /**
   * Calls `listener` with each lifecycle event of this host's VMs until the returned function is
   * called, across reconnects; events while no connection is open (libvirtd restarting) are missed.
   */
  onLifecycle(listener: (event: LifecycleEvent) => void): () => void {
    this.lifecycleListeners.add(listener);
    return () => this.lifecycleListeners.delete(listener);
  }

  /**
   * Calls `listener` with the reason (a virConnectCloseReason) each time libvirt reports an open
   * connection of this host closed (libvirtd went away, its socket failed), until the returned
   * function is called. The next call opens a fresh connection.
   */
  onClosed(listener: (reason: number) => void): () => void {
    this.closedListeners.add(listener);
    return () => this.closedListeners.delete(listener);
  }

  async close(): Promise<void> {
    await Promise.all([...this.spares].map((spare) => this.dropSpare(spare)));
    const opening = this.opening;
    this.opening = undefined;
    const conn = await opening?.catch(() => undefined);
    if (conn === undefined) return;
    // Closing does not wait for calls given up on (libvirtd may be frozen): the connection is
    // closed once they come back.
    const waits = callPool.inUse(conn);
    const released = this.release(conn);
    if (!waits) await released;
  }

  /**
   * Runs one procedure of the binding on this connection. A read that failed because libvirtd
   * closed the connection (a restart) runs once more on a fresh connection, and so does any call
   * that was never sent; other calls cut off by a closing fail with HypervisorUnreachable, and
   * the next call opens a fresh connection.
   */
  async call<K extends ProcedureName>(ctx: CallContext, name: K, ...args: Tail<ProcedureArgs<K>>): Promise<ProcedureResult<K>> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.open().catch((err: unknown) => {
        // libvirtd down or frozen when the call opens its connection: the call's words (what, which VM), not the open's.
        const unreachable = err instanceof VmdrError && err.code === 'HYPERVISOR_UNREACHABLE';
        throw unreachable || (err instanceof VmdrError && err.cause instanceof LibvirtCallTimedOut) ? translateLibvirtError((err as VmdrError).cause, { ...ctx, host: this.uri }) : err;
      });
      try {
        return await callPool.run(name, [conn, ...args] as unknown as ProcedureArgs<K>, ctx.timeoutMs ?? this.callTimeoutMs);
      } catch (err) {
        // No answer in time: the next call opens a fresh connection, which fails at once if the
        // host is gone; this one is closed when libvirt gives its calls back.
        if (err instanceof LibvirtCallTimedOut) void this.forget(conn);
        if (isConnectionFailure(err) && !(await this.alive(conn))) {
          await this.forget(conn);
          if (attempt === 0 && (READS.has(name) || neverSent(err))) continue;
        }
        throw await this.translate(err, ctx, conn);
      }
    }
  }

  /**
   * Opens, ahead of a group's starts, a connection of its own for each of the `count` VMs that will
   * start at once, so that none of them holds a place on the shared connection. Opened when the starts come, they
   * were opened while libvirtd launched the first QEMUs (80-130 ms each then, on the lab machine
   * under load, against 1-3 ms on a quiet libvirtd), and held call threads the group's other
   * calls waited for. One not used within SPARE_TTL_MS is closed.
   */
  prepareStarts(count: number): void {
    const want = count - this.spares.length;
    for (let i = 0; i < want; i++) {
      // A spare that could not be opened is dropped when its turn comes; the start opens its own.
      const spare = callPool.run('open', [this.uri, false], Math.min(OPEN_TIMEOUT_MS, this.callTimeoutMs)).then(
        ({ conn }) => conn,
        () => undefined,
      );
      this.spares.push(spare);
      setTimeout(() => void this.dropSpare(spare), SPARE_TTL_MS).unref();
    }
  }

  private async dropSpare(spare: Promise<Handle | undefined>): Promise<void> {
    const at = this.spares.indexOf(spare);
    if (at < 0) return;
    this.spares.splice(at, 1);
    const conn = await spare;
    if (conn !== undefined) await callPool.closeWhenUnused(conn).catch(() => undefined);
  }

  /**
   * Starts a VM (its UUID or name): on a connection opened ahead for it (prepareStarts), else on
   * the shared connection or on one of its own (STARTS_ON_SHARED_CONNECTION).
   */
  async start(ctx: CallContext, ref: string): Promise<void> {
    if (this.spares.length === 0 && this.startsOnShared < STARTS_ON_SHARED_CONNECTION) {
      this.startsOnShared++;
      try {
        await this.call(ctx, 'startDomain', ref);
      } finally {
        this.startsOnShared--;
      }
      return;
    }
    const timeoutMs = ctx.timeoutMs ?? this.callTimeoutMs;
    const spare = await this.spares.shift();
    const opened = () =>
      callPool.run('open', [this.uri, false], Math.min(OPEN_TIMEOUT_MS, timeoutMs)).then(
        ({ conn }) => conn,
        (err: unknown) => {
          throw translateLibvirtError(err, { ...ctx, host: this.uri });
        },
      );
    const startOn = async (conn: Handle, spareConn: boolean): Promise<boolean> => {
      try {
        await callPool.run('startDomain', [conn, ref], timeoutMs);
        return true;
      } catch (err) {
        // A spare that libvirtd closed while it waited (a restart): the start was never sent, and
        // goes on a fresh connection.
        if (spareConn && isConnectionFailure(err) && neverSent(err)) return false;
        throw await this.translate(err, ctx, conn);
      } finally {
        void callPool.closeWhenUnused(conn).catch(() => undefined);
      }
    };
    if (spare !== undefined && (await startOn(spare, true))) return;
    await startOn(await opened(), false);
  }

  private async translate(err: unknown, ctx: CallContext, conn: Handle): Promise<VmdrError> {
    const translated = translateLibvirtError(err, { ...ctx, host: this.uri });
    if (ctx.requires === undefined || ctx.vm === undefined || translated.code !== 'HYPERVISOR_OPERATION_FAILED') return translated;
    const state = await callPool.run('domainState', [conn, ctx.vm], 10_000).then(powerStateOf, () => undefined);
    if (state === undefined || state === ctx.requires || (ctx.requires === 'running' && state === 'paused')) return translated;
    return new InvalidPowerState(ctx.vm, this.uri, state, `cannot ${ctx.operation}`, err);
  }

  private alive(conn: Handle): Promise<boolean> {
    return callPool.run('isAlive', [conn], 10_000).catch(() => false);
  }

  /** The connection is gone: the next call opens another. */
  private async forget(conn: Handle): Promise<void> {
    // Its closing notice and a call that failed on it may both forget it; only the first releases
    // it (a second virConnectClose would free it under whoever holds it next).
    const opening = this.opening;
    const current = await opening?.catch(() => undefined);
    if (current !== conn || this.opening !== opening) return;
    this.opening = undefined;
    // Not awaited: calls given up on may hold it until libvirtd answers.
    void this.release(conn);
  }

  private async release(conn: Handle): Promise<void> {
    const watch = this.watches.get(conn);
    this.watches.delete(conn);
    if (watch !== undefined) libvirtEvents.unwatch(watch);
    // The close procedure unwatches the connection in libvirt before it closes it.
    await callPool.closeWhenUnused(conn).catch(() => undefined);
  }
}

export type { PowerState };
