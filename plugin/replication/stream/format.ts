/**
 * The delta stream, version 1: how one sync cycle's changed blocks travel from the source host to
 * the DR receiver. docs/delta-stream.md is the specification; this file is its constants.
 *
 * Every integer is big-endian (as in NBD). Each frame carries a CRC-32 chained from the stream
 * header's CRC, so a frame is bound to its session: a frame replayed from another stream fails its
 * checksum even when its sequence number fits. Integrity against an attacker is TLS's job; the CRC
 * is there to catch corruption, truncation, replays and bugs before anything reaches a replica.
 */
export const STREAM_MAGIC = Buffer.from('VMDRDS\r\n', 'latin1');
/** The HTTP media type of a request body that is one delta stream. */
export const DELTA_STREAM_TYPE = 'application/vnd.vmdr.delta-stream';
export const STREAM_VERSION = 1;
export const STREAM_PREFIX_BYTES = 16; // magic(8) version(2) reserved(2) headerLength(4)
export const MAX_HEADER_BYTES = 64 * 1024;

export const FRAME_MAGIC = 0x56444631; // "VDF1"
export const FRAME_HEADER_BYTES = 40;
/** The largest extent one frame may cover; bigger extents are split by the encoder. */
export const MAX_FRAME_DATA = 4 * 1024 * 1024;

export enum FrameKind {
  /** Bytes for [offset, offset+length) of a disk. */
  Data = 1,
  /** [offset, offset+length) reads as zeroes: no payload travels. */
  Zero = 2,
  /** The last frame: its payload is the JSON StreamTrailer. Nothing after it. */
  End = 3,
}

export enum Codec {
  Raw = 0,
  Zstd = 1,
}

export interface StreamDisk {
  /** Guest-visible disk name (vda). */
  name: string;
  sizeBytes: number;
}

/** What the stream is: one cycle of one protection, sent once at its start. */
export interface StreamHeader {
  session: string;
  protection: string;
  /** The source checkpoint this cycle's data is the state of. */
  checkpoint: string;
  /** The checkpoint the target already has; null for a full (initial or resync) stream. */
  since: string | null;
  /**
   * The recovery point the receiver must hold as its newest for this stream to apply on top of it;
   * null when the replica has no point yet. Guards against applying a delta to the wrong base.
   */
  base: string | null;
  /** full: every byte of every disk; incremental: the dirty blocks since `since`; resync: the blocks whose hashes differed. */
  kind: 'full' | 'incremental' | 'resync';
  disks: StreamDisk[];
  createdAt: string;
  /**
   * At most this many bytes of data frames (uncompressed) follow: the cycle's size, announced so
   * the receiver can refuse what its tenant's storage quota cannot take before anything is
   * written. Optional: senders before it did not say.
   */
  dataBytes?: number;
  /**
   * How consistent the cycle's data is (plugin/replication/consistency.ts), sent when the
   * protection asked for application consistency; absent: crash-consistent. A receiver older
   * than it refuses the field (STREAM_BAD_HEADER): upgrade the DR site first.
   */
  consistency?: 'application' | 'crash';
  consistencyIssue?: { code: string; message: string };
  freezeWindowMs?: number;
  /** The consistency group instant the cycle's checkpoint was taken in (PointConsistency.groupInstant); absent: none. */
  groupInstant?: string;
}

export interface StreamTrailer {
  frames: number;
  dataBytes: number;
  zeroBytes: number;
}

export interface DataFrame {
  kind: FrameKind.Data;
  seq: number;
  disk: number;
  offset: number;
  data: Buffer;
  /** Set by the decoder on a frame whose data is a reusable buffer: call once `data` is no longer used. */
  release?: () => void;
}

export interface ZeroFrame {
  kind: FrameKind.Zero;
  seq: number;
  disk: number;
  offset: number;
  length: number;
}

export interface EndFrame {
  kind: FrameKind.End;
  seq: number;
  trailer: StreamTrailer;
}

export type Frame = DataFrame | ZeroFrame | EndFrame;
