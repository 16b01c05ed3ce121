/**
 * vmdr's own NBD client: the source side reads dirty extents of QEMU's backup export through it, the
 * DR side writes recovery points into qemu-nbd with it. Hand-written because no maintained NBD client
 * exists on npm (the packages there are abandoned, oldstyle-only or server-only) and libnbd has no
 * Node binding.
 *
 * One socket carries many requests at once: each gets a unique cookie, replies are matched by cookie
 * in whatever order the server sends them, and sending waits for the socket to drain.
 */
import type { Socket } from 'node:net';
import type { NbdListen } from '../../../hypervisors/types.js';
import { openConnection } from './connection.js';
import { NbdConnectionClosed, NbdMetaContextUnavailable, NbdProtocolError, NbdUnsupported, targetSubject } from './errors.js';
import { appendExtents, type NbdExtent } from './extents.js';
import type { NegotiatedExport } from './handshake.js';
import {
  Cmd, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, requestHeader, TX_CAN_MULTI_CONN, TX_READ_ONLY, TX_SEND_FLUSH, TX_SEND_FUA,
  TX_SEND_TRIM, TX_SEND_WRITE_ZEROES,
} from './protocol.js';
import { ReplyParser, type PendingRequest } from './replies.js';

export type { NbdExtent } from './extents.js';
export { STATE_DIRTY, STATE_HOLE, STATE_ZERO } from './extents.js';

export interface NbdConnectOptions {
  exportName: string;
  /** Meta contexts to negotiate (NBD_OPT_SET_META_CONTEXT), e.g. 'base:allocation', 'qemu:dirty-bitmap:backup-vda'. */
  metaContexts?: string[];
  signal?: AbortSignal;
  /** Deadline for connect + handshake, default 10 s. */
  timeoutMs?: number;
}

const MiB = 1024 * 1024;
/** Every server must accept 32 MiB payloads; larger advertised limits only make requests coarser. */
const MAX_DATA_REQUEST = 32 * MiB;
/** Block status, trim and write-zeroes carry no payload; keep each request well inside 32 bits. */
const MAX_EFFECT_REQUEST = 2 ** 31;
/** How long close() waits for the server to hang up after NBD_CMD_DISC before cutting the socket. */
const DISCONNECT_GRACE_MS = 5_000;

export class NbdClient {
  readonly exportName: string;
  readonly size: number;
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canWriteZeroes: boolean;
  readonly canTrim: boolean;
  readonly canFua: boolean;
  readonly canMultiConn: boolean;
  /** The server's maximum payload (NBD_INFO_BLOCK_SIZE), else 32 MiB. */
  readonly maxBlockSize: number;
  readonly minBlockSize: number;
  readonly preferredBlockSize: number;

  private readonly pending = new Map<number, PendingRequest>();
  private readonly parser: ReplyParser;
  private readonly contexts: Map<string, number>;
  private readonly dataRequest: number;
  private nextCookie = 1;
  private backlog: Buffer[][] = [];
  private waitingForDrain = false;
  /** Set once the connection is unusable; every later request rejects with it. */
  private failure: Error | undefined;
  private closing: Promise<void> | undefined;
  private disconnecting = false;
  private socketError: Error | undefined;
  private idleWaiters: (() => void)[] = [];

  static async connect(target: NbdListen, options: NbdConnectOptions): Promise<NbdClient> {
    const connection = await openConnection(target, {
      exportName: options.exportName,
      metaContexts: options.metaContexts ?? [],
      signal: options.signal,
      timeoutMs: options.timeoutMs ?? 10_000,
    });
    const client = new NbdClient(target, options.exportName, connection.socket, connection.info);
    connection.setReceiver((chunk) => client.receive(chunk));
    if (connection.leftover.length > 0) client.receive(connection.leftover);
    return client;
  }

  private constructor(
    private readonly target: NbdListen,
    exportName: string,
    private readonly socket: Socket,
    info: NegotiatedExport,
  ) {
    this.exportName = exportName;
    this.size = info.size;
    const flags = info.transmissionFlags;
    this.readOnly = (flags & TX_READ_ONLY) !== 0;
    this.canFlush = (flags & TX_SEND_FLUSH) !== 0;
    this.canFua = (flags & TX_SEND_FUA) !== 0;
    this.canTrim = (flags & TX_SEND_TRIM) !== 0;
    this.canWriteZeroes = (flags & TX_SEND_WRITE_ZEROES) !== 0;
    this.canMultiConn = (flags & TX_CAN_MULTI_CONN) !== 0;
    this.maxBlockSize = info.maxPayload ?? MAX_DATA_REQUEST;
    this.minBlockSize = info.minBlockSize;
    this.preferredBlockSize = info.preferredBlockSize;
    const limit = Math.min(this.maxBlockSize, MAX_DATA_REQUEST);
    this.dataRequest = Math.max(limit - (limit % this.minBlockSize), this.minBlockSize);
    this.contexts = info.metaContexts;
    this.parser = new ReplyParser(exportName, this.pending);
    socket.on('error', (err) => {
      this.socketError = err;
    });
    socket.on('close', () => this.onSocketClose());
  }

  hasMetaContext(name: string): boolean {
    return this.contexts.has(name);
  }

  /**
   * Block status of [offset, offset+length) (default: the whole export) in one negotiated context.
   * Servers may answer a prefix, so this asks again from where the answer ended until the range is
   * covered; adjacent extents with equal flags are merged and the result is clipped to the range.
   */
  async extents(context: string, offset = 0, length = this.size - offset): Promise<NbdExtent[]> {
    const id = this.contexts.get(context);
    if (id === undefined) {
      throw new NbdMetaContextUnavailable(this.target, this.exportName, context, 'it was not negotiated; pass it in metaContexts when connecting');
    }
    this.checkRange(offset, length);
    const extents: NbdExtent[] = [];
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const status = new Map<number, Buffer>();
      await this.request(Cmd.BLOCK_STATUS, 0, at, Math.min(end - at, MAX_EFFECT_REQUEST), { status });
      const descriptors = status.get(id);
      if (!descriptors) throw this.fail(new NbdProtocolError(this.exportName, `block status reply without context ${context}`));
      at = appendExtents(extents, descriptors, at, end);
    }
    return extents;
  }

  /** Splits requests above the server's maximum payload; holes come back as zeroes. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const data = Buffer.allocUnsafe(length);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += this.dataRequest) {
      const n = Math.min(this.dataRequest, length - at);
      parts.push(this.request(Cmd.READ, 0, offset + at, n, { data: data.subarray(at, at + n) }));
    }
    await Promise.all(parts);
    return data;
  }

  /** Without server FUA support, `fua` becomes a flush after the write. */
  async write(offset: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    this.checkWritable('write');
    this.checkRange(offset, data.length);
    const flags = options.fua && this.canFua ? CMD_FLAG_FUA : 0;
    const parts: Promise<void>[] = [];
    for (let at = 0; at < data.length; at += this.dataRequest) {
      const payload = data.subarray(at, Math.min(at + this.dataRequest, data.length));
      parts.push(this.request(Cmd.WRITE, flags, offset + at, payload.length, { payload }));
    }
    await Promise.all(parts);
    if (options.fua && !this.canFua && this.canFlush) await this.flush();
  }

  /** Without NBD_CMD_WRITE_ZEROES on the export, writes buffers of zeroes instead. */
  async writeZeroes(offset: number, length: number, options: { noHole?: boolean; fua?: boolean } = {}): Promise<void> {
    this.checkWritable('write-zeroes');
    this.checkRange(offset, length);
    if (!this.canWriteZeroes) {
      const zeroes = Buffer.alloc(Math.min(length, this.dataRequest));
      const parts: Promise<void>[] = [];
      for (let at = 0; at < length; at += zeroes.length) parts.push(this.write(offset + at, zeroes.subarray(0, Math.min(zeroes.length, length - at)), options));
      await Promise.all(parts);
      return;
    }
    const flags = (options.noHole ? CMD_FLAG_NO_HOLE : 0) | (options.fua && this.canFua ? CMD_FLAG_FUA : 0);
    await this.effect(Cmd.WRITE_ZEROES, flags, offset, length);
    if (options.fua && !this.canFua && this.canFlush) await this.flush();
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable('trim');
    this.checkRange(offset, length);
    if (!this.canTrim) throw this.unsupported('trim', 'the export does not support trim (no NBD_FLAG_SEND_TRIM)');
    await this.effect(Cmd.TRIM, 0, offset, length);
  }

  async flush(): Promise<void> {
    if (!this.canFlush) throw this.unsupported('flush', 'the export does not support flush (no NBD_FLAG_SEND_FLUSH)');
    await this.request(Cmd.FLUSH, 0, 0, 0, {});
  }

  /** Waits for in-flight requests, sends NBD_CMD_DISC, closes the socket. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= this.disconnect();
    return this.closing;
  }

  /** Tears the connection down now; every pending request rejects with NBD_CONNECTION_CLOSED. */
  destroy(): void {
    this.fail(new NbdConnectionClosed(this.exportName, 'the client tore the connection down'));
  }

  private async disconnect(): Promise<void> {
    while (this.pending.size > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.failure) return;
    this.disconnecting = true;
    this.send([requestHeader(Cmd.DISC, 0, this.nextCookie++, 0, 0)]);
    this.socket.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise((resolve) => (this.socket.closed ? resolve(undefined) : this.socket.once('close', resolve))),
      new Promise((resolve) => (timer = setTimeout(resolve, DISCONNECT_GRACE_MS))),
    ]);
    clearTimeout(timer);
    this.socket.destroy();
  }

  private effect(command: Cmd, flags: number, offset: number, length: number): Promise<void> {
    const step = MAX_EFFECT_REQUEST - (MAX_EFFECT_REQUEST % this.minBlockSize);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += step) parts.push(this.request(command, flags, offset + at, Math.min(step, length - at), {}));
    return Promise.all(parts).then(() => undefined);
  }

  private request(
    command: Cmd,
    flags: number,
    offset: number,
    length: number,
    extra: { data?: Buffer; status?: Map<number, Buffer>; payload?: Buffer },
  ): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new NbdConnectionClosed(this.exportName, 'close() was called'));
    const cookie = this.nextCookie++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(cookie, {
        command,
        offset,
        length,
        data: extra.data,
        status: extra.status,
        settle: (err) => {
          if (err) reject(err);
          else resolve();
          if (this.pending.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
        },
      });
      const header = requestHeader(command, flags, cookie, offset, length);
      this.send(extra.payload ? [header, extra.payload] : [header]);
    });
  }

  /** Writes one request, or queues it while the socket is over its high-water mark. */
  private send(buffers: Buffer[]): void {
    if (this.waitingForDrain) {
      this.backlog.push(buffers);
      return;
    }
    this.socket.cork();
    let ok = true;
    for (const buf of buffers) ok = this.socket.write(buf);
    this.socket.uncork();
    if (!ok) {
      this.waitingForDrain = true;
      this.socket.once('drain', () => {
        this.waitingForDrain = false;
        while (this.backlog.length > 0 && !this.waitingForDrain) this.send(this.backlog.shift()!);
      });
    }
  }

  private receive(chunk: Buffer): void {
    try {
      this.parser.push(chunk);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    // NBD_ESHUTDOWN obliges the client to disconnect once its requests are answered.
    if (this.parser.serverShuttingDown) void this.close().catch(() => undefined);
  }

  private onSocketClose(): void {
    const waiting = this.pending.size;
    const detail = this.disconnecting && waiting === 0 ? 'the client disconnected'
      : this.parser.midReply ? `the server closed the connection in the middle of a reply (${waiting} requests pending)`
      : `the server closed the connection with ${waiting} requests pending`;
    this.fail(new NbdConnectionClosed(this.exportName, detail, this.socketError));
  }

  /** Makes the connection unusable with `err` and rejects everything pending with it. */
  private fail(err: Error): Error {
    this.failure ??= err;
    this.backlog = [];
    this.socket.destroy();
    const requests = [...this.pending.values()];
    this.pending.clear();
    for (const request of requests) request.settle(err);
    for (const wake of this.idleWaiters.splice(0)) wake();
    return err;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`[${offset}, +${length}) is not within export ${JSON.stringify(this.exportName)} of ${this.size} bytes`);
    }
  }

  private checkWritable(command: string): void {
    if (this.readOnly) throw this.unsupported(command, `export ${JSON.stringify(this.exportName)} is read-only; ${command} refused`);
  }

  private unsupported(command: string, detail: string): NbdUnsupported {
    return new NbdUnsupported({ ...targetSubject(this.target), export: this.exportName, command }, detail);
  }
}
