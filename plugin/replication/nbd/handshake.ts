/**
 * The fixed newstyle handshake: structured replies (required), the meta contexts the caller asked
 * for, then NBD_OPT_GO with a block-size request. Extended headers are deliberately not negotiated:
 * the client keeps to 32-bit request lengths and the reply formats every server speaks.
 */
import type { NbdListen } from '../../../hypervisors/types.js';
import { NbdExportNotFound, NbdHandshakeFailed, NbdMetaContextUnavailable, NbdUnsupported, targetSubject } from './errors.js';
import {
  CLISERV_MAGIC, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, Info, NBDMAGIC, Opt,
  OPTION_REPLY_MAGIC, readU64, Rep, REP_ERR, REP_ERR_NAMES, REP_ERR_TLS_REQD, REP_ERR_UNKNOWN, REP_ERR_UNSUP,
} from './protocol.js';

/** What the server told us about the export it let us into. */
export interface NegotiatedExport {
  size: number;
  transmissionFlags: number;
  minBlockSize: number;
  preferredBlockSize: number;
  /** The advertised maximum payload, undefined when the server did not send NBD_INFO_BLOCK_SIZE. */
  maxPayload: number | undefined;
  /** Negotiated meta context name -> the id the server uses for it in block-status replies. */
  metaContexts: Map<string, number>;
}

/** Option replies carry at most a name or a short message; anything larger is not a sane server. */
const MAX_OPTION_REPLY = 64 * 1024;

/** Exact-length reads over the bytes the socket delivers during the handshake. */
export class HandshakeReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { length: number; resolve: (buf: Buffer) => void; reject: (err: unknown) => void } | undefined;
  private failure: unknown;

  /** `chunk` must be the reader's own copy. */
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.settle();
  }

  fail(err: unknown): void {
    this.failure ??= err;
    this.settle();
  }

  read(length: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.waiter = { length, resolve, reject };
      this.settle();
    });
  }

  /** Whatever arrived after the last handshake message; handed to the reply parser. */
  rest(): Buffer {
    return Buffer.concat(this.chunks);
  }

  private settle(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    if (this.buffered >= waiter.length) {
      this.waiter = undefined;
      const all = Buffer.concat(this.chunks);
      this.chunks = all.length > waiter.length ? [all.subarray(waiter.length)] : [];
      this.buffered -= waiter.length;
      waiter.resolve(all.subarray(0, waiter.length));
    } else if (this.failure !== undefined) {
      this.waiter = undefined;
      waiter.reject(this.failure);
    }
  }
}

interface OptionReply {
  type: number;
  data: Buffer;
}

export async function negotiate(
  reader: HandshakeReader,
  write: (buf: Buffer) => void,
  target: NbdListen,
  exportName: string,
  metaContexts: readonly string[],
): Promise<NegotiatedExport> {
  const failed = (detail: string) => new NbdHandshakeFailed(target, exportName, detail);
  const unsupported = (detail: string) => new NbdUnsupported({ ...targetSubject(target), export: exportName }, detail);

  const greeting = await reader.read(18);
  if (greeting.readBigUInt64BE(0) !== NBDMAGIC) throw failed('the server did not greet with NBDMAGIC; is it an NBD server?');
  const style = greeting.readBigUInt64BE(8);
  if (style === CLISERV_MAGIC) throw unsupported('the server speaks the oldstyle NBD handshake; vmdr needs fixed newstyle');
  if (style !== IHAVEOPT) throw failed(`unknown handshake magic 0x${style.toString(16)}`);
  const handshakeFlags = greeting.readUInt16BE(16);
  if (!(handshakeFlags & FLAG_FIXED_NEWSTYLE)) throw unsupported('the server speaks non-fixed newstyle NBD only; vmdr needs fixed newstyle');
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | (handshakeFlags & FLAG_NO_ZEROES ? FLAG_C_NO_ZEROES : 0));
  write(clientFlags);

  const sendOption = (option: Opt, data: Buffer) => {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(IHAVEOPT, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    write(Buffer.concat([header, data]));
  };
  const readReply = async (option: Opt): Promise<OptionReply> => {
    const header = await reader.read(20);
    if (header.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw failed('bad option reply magic');
    if (header.readUInt32BE(8) !== option) throw failed(`reply to option ${header.readUInt32BE(8)} while waiting for option ${option}`);
    const length = header.readUInt32BE(16);
    if (length > MAX_OPTION_REPLY) throw failed(`option reply of ${length} bytes`);
    return { type: header.readUInt32BE(12), data: length ? await reader.read(length) : Buffer.alloc(0) };
  };
  const errorText = (reply: OptionReply) => {
    const name = REP_ERR_NAMES[reply.type] ?? `error 0x${reply.type.toString(16)}`;
    const message = reply.data.toString('utf8');
    return message ? `${name}: ${message}` : name;
  };

  sendOption(Opt.STRUCTURED_REPLY, Buffer.alloc(0));
  const structured = await readReply(Opt.STRUCTURED_REPLY);
  if (structured.type !== Rep.ACK) {
    throw unsupported(`the server refused structured replies (${errorText(structured)}); vmdr needs them for sparse reads and block status`);
  }

  const name = Buffer.from(exportName, 'utf8');
  const metaContextIds = new Map<string, number>();
  if (metaContexts.length > 0) {
    const queries = metaContexts.map((context) => Buffer.from(context, 'utf8'));
    const data = Buffer.alloc(8 + name.length + queries.reduce((sum, q) => sum + 4 + q.length, 0));
    let at = data.writeUInt32BE(name.length, 0);
    at += name.copy(data, at);
    at = data.writeUInt32BE(queries.length, at);
    for (const query of queries) {
      at = data.writeUInt32BE(query.length, at);
      at += query.copy(data, at);
    }
    sendOption(Opt.SET_META_CONTEXT, data);
    for (;;) {
      const reply = await readReply(Opt.SET_META_CONTEXT);
      if (reply.type === Rep.ACK) break;
      if (reply.type === Rep.META_CONTEXT) {
        if (reply.data.length < 4) throw failed('short NBD_REP_META_CONTEXT');
        metaContextIds.set(reply.data.toString('utf8', 4), reply.data.readUInt32BE(0));
      } else if (reply.type === REP_ERR_UNKNOWN) {
        throw new NbdExportNotFound(target, exportName, reply.data.toString('utf8'));
      } else if (reply.type & REP_ERR) {
        throw new NbdMetaContextUnavailable(target, exportName, metaContexts.join(', '), `the server refused to select meta contexts (${errorText(reply)})`);
      } else {
        throw failed(`unexpected reply type ${reply.type} to NBD_OPT_SET_META_CONTEXT`);
      }
    }
    const missing = metaContexts.find((context) => !metaContextIds.has(context));
    if (missing !== undefined) throw new NbdMetaContextUnavailable(target, exportName, missing);
  }

  const go = Buffer.alloc(4 + name.length + 4);
  go.writeUInt32BE(name.length, 0);
  name.copy(go, 4);
  go.writeUInt16BE(1, 4 + name.length);
  go.writeUInt16BE(Info.BLOCK_SIZE, 6 + name.length);
  sendOption(Opt.GO, go);
  let exportInfo: { size: number; flags: number } | undefined;
  let blockSize: { min: number; preferred: number; max: number } | undefined;
  for (;;) {
    const reply = await readReply(Opt.GO);
    if (reply.type === Rep.ACK) break;
    if (reply.type === Rep.INFO) {
      if (reply.data.length < 2) throw failed('short NBD_REP_INFO');
      const info = reply.data.readUInt16BE(0);
      if (info === Info.EXPORT) {
        if (reply.data.length !== 12) throw failed(`NBD_INFO_EXPORT of ${reply.data.length} bytes`);
        exportInfo = { size: readU64(reply.data, 2), flags: reply.data.readUInt16BE(10) };
      } else if (info === Info.BLOCK_SIZE) {
        if (reply.data.length !== 14) throw failed(`NBD_INFO_BLOCK_SIZE of ${reply.data.length} bytes`);
        blockSize = { min: reply.data.readUInt32BE(2), preferred: reply.data.readUInt32BE(6), max: reply.data.readUInt32BE(10) };
      }
      // Other information types are optional and may be ignored.
    } else if (reply.type === REP_ERR_UNKNOWN) {
      throw new NbdExportNotFound(target, exportName, reply.data.toString('utf8'));
    } else if (reply.type === REP_ERR_UNSUP) {
      throw unsupported('the server does not support NBD_OPT_GO; vmdr does not fall back to NBD_OPT_EXPORT_NAME');
    } else if (reply.type === REP_ERR_TLS_REQD) {
      throw unsupported('the server requires TLS; vmdr talks plain NBD to exports on the same host');
    } else {
      throw failed(`the server refused export ${JSON.stringify(exportName)} (${errorText(reply)})`);
    }
  }
  if (!exportInfo) throw failed('the server accepted NBD_OPT_GO without sending NBD_INFO_EXPORT');
  if (!Number.isSafeInteger(exportInfo.size)) throw unsupported(`export size ${exportInfo.size} is beyond 2^53 bytes`);
  return {
    size: exportInfo.size,
    transmissionFlags: exportInfo.flags,
    minBlockSize: blockSize?.min || 1,
    preferredBlockSize: blockSize?.preferred || 4096,
    maxPayload: blockSize?.max || undefined,
    metaContexts: metaContextIds,
  };
}
