/**
 * Parses the server's transmission-phase byte stream (simple replies and structured reply chunks,
 * interleaved across requests in any order) and settles the pending requests they answer.
 *
 * Read payloads are copied once, from the socket's receive buffer straight into the buffer the
 * caller gets back; nothing else in the stream is large enough to matter.
 */
import { NbdProtocolError, NbdServerError } from './errors.js';
import {
  Cmd, CMD_NAMES, ERRNO_NAMES, ESHUTDOWN, readU64, REPLY_FLAG_DONE, REPLY_TYPE_ERROR_BIT, ReplyType, SIMPLE_REPLY_HEADER_SIZE,
  SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_HEADER_SIZE, STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

/** One request the server has not finished answering. */
export interface PendingRequest {
  readonly command: Cmd;
  readonly offset: number;
  readonly length: number;
  /** Read destination, exactly `length` bytes; chunks land at their offset within it. */
  readonly data?: Buffer;
  /** Block status descriptors (the payload after the context id), by context id. */
  readonly status?: Map<number, Buffer>;
  settle(err?: Error): void;
}

interface RequestState {
  covered: Interval[];
  error?: { errno: string; message: string };
}
type Interval = [start: number, end: number];

/** Block-status chunks are bounded by the spec's 2^20 descriptors; error chunks by 4 KiB of text. */
const MAX_METADATA_PAYLOAD = 4 + 8 * 2 ** 20 + 4096;

const enum State {
  Header,
  Payload,
  DataPrefix,
  Data,
}

export class ReplyParser {
  private state = State.Header;
  private readonly header = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE);
  private headerFill = 0;
  private payload = Buffer.alloc(0);
  private payloadFill = 0;
  private cookie = 0;
  private flags = 0;
  private type = 0;
  private request: PendingRequest | undefined;
  private dataAt = 0;
  private dataLeft = 0;
  private readonly states = new WeakMap<PendingRequest, RequestState>();
  /** Set when a reply carried NBD_ESHUTDOWN: the client must then disconnect. */
  serverShuttingDown = false;

  constructor(
    private readonly exportName: string,
    private readonly pending: Map<number, PendingRequest>,
  ) {}

  /** True while a message is partly received: a close now cut a reply in half. */
  get midReply(): boolean {
    return this.state !== State.Header || this.headerFill > 0;
  }

  /** Consumes `chunk` synchronously (it may be reused afterwards). Throws NbdProtocolError. */
  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.state) {
        case State.Header: {
          const size = this.headerFill < 4 ? 4 : this.headerSize();
          const n = Math.min(size - this.headerFill, chunk.length - pos);
          chunk.copy(this.header, this.headerFill, pos, pos + n);
          this.headerFill += n;
          pos += n;
          if (this.headerFill === size && size > 4) this.onHeader();
          break;
        }
        case State.Payload:
        case State.DataPrefix: {
          const n = Math.min(this.payload.length - this.payloadFill, chunk.length - pos);
          chunk.copy(this.payload, this.payloadFill, pos, pos + n);
          this.payloadFill += n;
          pos += n;
          if (this.payloadFill === this.payload.length) {
            if (this.state === State.Payload) this.onPayload();
            else this.onDataPrefix();
          }
          break;
        }
        case State.Data: {
          const n = Math.min(this.dataLeft, chunk.length - pos);
          chunk.copy(this.request!.data!, this.dataAt, pos, pos + n);
          this.dataAt += n;
          this.dataLeft -= n;
          pos += n;
          if (this.dataLeft === 0) this.endChunk();
          break;
        }
      }
    }
  }

  private headerSize(): number {
    const magic = this.header.readUInt32BE(0);
    if (magic === STRUCTURED_REPLY_MAGIC) return STRUCTURED_REPLY_HEADER_SIZE;
    if (magic === SIMPLE_REPLY_MAGIC) return SIMPLE_REPLY_HEADER_SIZE;
    throw this.violation(`bad reply magic 0x${magic.toString(16)}`);
  }

  private onHeader(): void {
    const simple = this.header.readUInt32BE(0) === SIMPLE_REPLY_MAGIC;
    this.cookie = readU64(this.header, 8);
    const request = this.pending.get(this.cookie);
    if (!request) throw this.violation(`reply for unknown cookie ${this.cookie}`);
    this.request = request;
    this.headerFill = 0;
    if (simple) {
      const errno = this.header.readUInt32BE(4);
      // A successful simple reply to a read would carry a payload; structured replies forbid it.
      if (request.command === Cmd.READ && errno === 0) throw this.violation('simple reply to a read');
      if (errno !== 0) this.recordError(request, errno, '');
      this.finish();
      return;
    }
    this.flags = this.header.readUInt16BE(4);
    this.type = this.header.readUInt16BE(6);
    const length = this.header.readUInt32BE(16);
    if (this.type === ReplyType.OFFSET_DATA) {
      if (request.command !== Cmd.READ) throw this.violation(`data chunk in reply to ${CMD_NAMES[request.command]}`);
      if (length < 9) throw this.violation(`data chunk of length ${length}`);
      this.dataLeft = length - 8;
      this.expect(State.DataPrefix, 8);
    } else if (length > MAX_METADATA_PAYLOAD) {
      throw this.violation(`chunk of type ${this.type} with ${length} bytes of payload`);
    } else if (length === 0) {
      this.payload = Buffer.alloc(0);
      this.onPayload();
    } else {
      this.expect(State.Payload, length);
    }
  }

  private expect(state: State, length: number): void {
    this.state = state;
    this.payload = Buffer.allocUnsafe(length);
    this.payloadFill = 0;
  }

  private onDataPrefix(): void {
    const request = this.request!;
    const offset = readU64(this.payload, 0);
    this.claim(request, offset, this.dataLeft);
    this.dataAt = offset - request.offset;
    this.state = State.Data;
  }

  private onPayload(): void {
    const request = this.request!;
    const payload = this.payload;
    const command = CMD_NAMES[request.command];
    switch (this.type) {
      case ReplyType.NONE:
        if (payload.length !== 0 || !(this.flags & REPLY_FLAG_DONE)) throw this.violation('NBD_REPLY_TYPE_NONE with a payload or without DONE');
        break;
      case ReplyType.OFFSET_HOLE: {
        if (request.command !== Cmd.READ) throw this.violation(`hole chunk in reply to ${command}`);
        if (payload.length !== 12) throw this.violation(`hole chunk of length ${payload.length}`);
        const offset = readU64(payload, 0);
        const size = payload.readUInt32BE(8);
        if (size === 0) throw this.violation('hole chunk of size 0');
        this.claim(request, offset, size);
        request.data!.fill(0, offset - request.offset, offset - request.offset + size);
        break;
      }
      case ReplyType.BLOCK_STATUS: {
        if (request.command !== Cmd.BLOCK_STATUS) throw this.violation(`block status chunk in reply to ${command}`);
        if (payload.length < 12 || (payload.length - 4) % 8 !== 0) throw this.violation(`block status chunk of length ${payload.length}`);
        for (let at = 4; at < payload.length; at += 8) {
          if (payload.readUInt32BE(at) === 0) throw this.violation('block status descriptor of length 0');
        }
        const id = payload.readUInt32BE(0);
        if (request.status!.has(id)) throw this.violation(`two block status chunks for context id ${id}`);
        request.status!.set(id, payload.subarray(4));
        break;
      }
      default: {
        if (!(this.type & REPLY_TYPE_ERROR_BIT)) throw this.violation(`unknown chunk type ${this.type}`);
        // Known or not, an error chunk starts with errno and a message; ERROR_OFFSET adds an offset.
        const fixed = this.type === ReplyType.ERROR_OFFSET ? 14 : 6;
        if (payload.length < fixed) throw this.violation(`error chunk of length ${payload.length}`);
        const messageLength = payload.readUInt16BE(4);
        if (messageLength > payload.length - fixed) throw this.violation('error message longer than its chunk');
        const errno = payload.readUInt32BE(0);
        if (errno === 0) throw this.violation('error chunk with error 0');
        if (this.type === ReplyType.ERROR_OFFSET) {
          const at = readU64(payload, 6 + messageLength);
          if (at < request.offset || at >= request.offset + request.length) throw this.violation(`error offset ${at} outside the request`);
        }
        this.recordError(request, errno, payload.toString('utf8', 6, 6 + messageLength));
      }
    }
    this.endChunk();
  }

  private endChunk(): void {
    this.state = State.Header;
    this.payload = Buffer.alloc(0);
    if (this.flags & REPLY_FLAG_DONE) this.finish();
  }

  /** The request's last chunk has arrived: settle it. */
  private finish(): void {
    const request = this.request!;
    this.request = undefined;
    this.flags = 0;
    this.pending.delete(this.cookie);
    const state = this.states.get(request);
    if (state?.error) {
      request.settle(new NbdServerError({ exportName: this.exportName, command: CMD_NAMES[request.command]!, offset: request.offset, length: request.length }, state.error.errno, state.error.message));
      return;
    }
    if (request.command === Cmd.READ) {
      const covered = (state?.covered ?? []).reduce((sum, [start, end]) => sum + end - start, 0);
      if (covered !== request.length) throw this.violation(`read reply covered ${covered} of ${request.length} bytes`);
    }
    request.settle();
  }

  private recordError(request: PendingRequest, errno: number, message: string): void {
    const state = this.stateOf(request);
    // The first error is the one that explains the failure; later ones (ERROR_OFFSET per extent) repeat it.
    state.error ??= { errno: ERRNO_NAMES[errno] ?? 'EINVAL', message };
    if (errno === ESHUTDOWN) this.serverShuttingDown = true;
  }

  /** Content chunks must lie inside the request and not overlap one another. */
  private claim(request: PendingRequest, offset: number, length: number): void {
    if (offset < request.offset || offset + length > request.offset + request.length) {
      throw this.violation(`chunk [${offset}, +${length}) outside the request [${request.offset}, +${request.length})`);
    }
    const covered = this.stateOf(request).covered;
    const start = offset;
    const end = offset + length;
    // Chunks usually arrive in order, so the search from the end stops at once.
    let i = covered.length;
    while (i > 0 && covered[i - 1]![0] >= end) i--;
    const prev = covered[i - 1];
    const next = covered[i];
    if (prev && prev[1] > start) throw this.violation(`chunk [${offset}, +${length}) overlaps an earlier chunk`);
    const joinsPrev = prev !== undefined && prev[1] === start;
    const joinsNext = next !== undefined && next[0] === end;
    if (joinsPrev && joinsNext) {
      prev[1] = next[1];
      covered.splice(i, 1);
    } else if (joinsPrev) prev[1] = end;
    else if (joinsNext) next[0] = start;
    else covered.splice(i, 0, [start, end]);
  }

  private stateOf(request: PendingRequest): RequestState {
    let state = this.states.get(request);
    if (!state) this.states.set(request, (state = { covered: [] }));
    return state;
  }

  private violation(detail: string): NbdProtocolError {
    return new NbdProtocolError(this.exportName, detail);
  }
}
