/**
 * NBD wire constants, named as in the protocol specification (NetworkBlockDevice/nbd doc/proto.md),
 * and the one fixed-size message the client sends in the transmission phase.
 */

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
/** The second magic of the oldstyle handshake, which this client refuses. */
export const CLISERV_MAGIC = 0x00420281861253n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;

export enum Opt {
  ABORT = 2,
  GO = 7,
  STRUCTURED_REPLY = 8,
  SET_META_CONTEXT = 10,
}

export enum Rep {
  ACK = 1,
  INFO = 3,
  META_CONTEXT = 4,
}
/** Error replies have bit 31 set. */
export const REP_ERR = 0x80000000;
export const REP_ERR_NAMES: Record<number, string> = {
  [REP_ERR + 1]: 'NBD_REP_ERR_UNSUP',
  [REP_ERR + 2]: 'NBD_REP_ERR_POLICY',
  [REP_ERR + 3]: 'NBD_REP_ERR_INVALID',
  [REP_ERR + 4]: 'NBD_REP_ERR_PLATFORM',
  [REP_ERR + 5]: 'NBD_REP_ERR_TLS_REQD',
  [REP_ERR + 6]: 'NBD_REP_ERR_UNKNOWN',
  [REP_ERR + 7]: 'NBD_REP_ERR_SHUTDOWN',
  [REP_ERR + 8]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
  [REP_ERR + 9]: 'NBD_REP_ERR_TOO_BIG',
};
export const REP_ERR_UNSUP = REP_ERR + 1;
export const REP_ERR_TLS_REQD = REP_ERR + 5;
export const REP_ERR_UNKNOWN = REP_ERR + 6;

export enum Info {
  EXPORT = 0,
  BLOCK_SIZE = 3,
}

/** Transmission flags (NBD_FLAG_*), sent with NBD_INFO_EXPORT. */
export const TX_READ_ONLY = 1 << 1;
export const TX_SEND_FLUSH = 1 << 2;
export const TX_SEND_FUA = 1 << 3;
export const TX_SEND_TRIM = 1 << 5;
export const TX_SEND_WRITE_ZEROES = 1 << 6;
export const TX_CAN_MULTI_CONN = 1 << 8;

export enum Cmd {
  READ = 0,
  WRITE = 1,
  DISC = 2,
  FLUSH = 3,
  TRIM = 4,
  WRITE_ZEROES = 6,
  BLOCK_STATUS = 7,
}
export const CMD_NAMES: Record<number, string> = {
  [Cmd.READ]: 'read',
  [Cmd.WRITE]: 'write',
  [Cmd.DISC]: 'disconnect',
  [Cmd.FLUSH]: 'flush',
  [Cmd.TRIM]: 'trim',
  [Cmd.WRITE_ZEROES]: 'write-zeroes',
  [Cmd.BLOCK_STATUS]: 'block-status',
};

export const CMD_FLAG_FUA = 1 << 0;
export const CMD_FLAG_NO_HOLE = 1 << 1;

export const REPLY_FLAG_DONE = 1 << 0;

export enum ReplyType {
  NONE = 0,
  OFFSET_DATA = 1,
  OFFSET_HOLE = 2,
  BLOCK_STATUS = 5,
  ERROR = 0x8001,
  ERROR_OFFSET = 0x8002,
}
/** Every error chunk type has bit 15 set, known to us or not. */
export const REPLY_TYPE_ERROR_BIT = 0x8000;

/** The error values the specification defines; anything else the client must treat as EINVAL. */
export const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};
export const ESHUTDOWN = 108;

export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_HEADER_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;

const TWO_32 = 2 ** 32;

/** Writes a non-negative integer below 2^53 as a big-endian u64 without going through BigInt. */
export function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), at);
  buf.writeUInt32BE(value % TWO_32, at + 4);
}

/** Reads a big-endian u64; values at or above 2^53 come back inexact, callers range-check them. */
export function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}

export function requestHeader(type: Cmd, flags: number, cookie: number, offset: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  buf.writeUInt32BE(REQUEST_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(type, 6);
  writeU64(buf, cookie, 8);
  writeU64(buf, offset, 16);
  buf.writeUInt32BE(length, 24);
  return buf;
}
