/**
 * What the receiver suites share: a config naming a DR site with a receiver, delta streams made
 * the way a source host makes them (DeltaStreamEncoder) and kept frame by frame so a test can cut,
 * flip, replay or splice them, a byte model of every disk, and readers of a recovery point's
 * images (qemu-img convert to raw, qemu-img check) to hold the replica to that model.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { crc32 } from 'node:zlib';
import { HASH_BLOCK } from '../../plugin/replication/capture/block-hashes.js';
import { isPointFile } from '../../plugin/replication/replica/files.js';
import type { RecoveryPoint } from '../../plugin/replication/replica/store.js';
import { DeltaStreamEncoder } from '../../plugin/replication/stream/encode.js';
import type { StreamHeader } from '../../plugin/replication/stream/format.js';

const exec = promisify(execFile);
export const KiB = 1024;
export const MiB = 1024 * KiB;

/** Small, seedable, good enough to pick offsets and kill moments; the seed replays a run. */
export class Prng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  /** mulberry32 */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = (this.next() * 4294967296) >>> 0;
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return out;
  }
}

export interface DiskSpec {
  name: string;
  sizeBytes: number;
}

export interface ProtectionSpec {
  name: string;
  site?: string;
  keep?: number;
  /** The whole `retention:` value (instead of keep), e.g. "{ all: 15m, hourly: 1d }". */
  retention?: string;
  tenant?: string;
}

/** A whole vmdr.yaml: a source site never contacted, the DR site `dr` with storage and receiver. */
export function receiverConfigYaml(o: { statePath: string; storage: string; listen: string; credentials: string; protections: ProtectionSpec[]; tenants?: string }): string {
  const protections = o.protections
    .map(
      (p) => `  - name: ${p.name}
    source: { site: prod, vm: ${p.name} }${p.tenant ? `\n    tenant: ${p.tenant}` : ''}
    retention: ${p.retention ?? `{ keep: ${p.keep ?? 24} }`}
    target: { site: ${p.site ?? 'dr'}, vm: ${p.name}-dr, nics: [{ network: test-net }] }`,
    )
    .join('\n');
  return `version: 1
state: { path: ${o.statePath} }
sites:
  - { name: prod, uri: "test:///default" }
  - name: dr
    uri: "test:///default"
    storage: ${o.storage}
    receiver: { listen: "${o.listen}", credentials: ${o.credentials} }
  - { name: dr2, uri: "test:///default", storage: ${o.storage}-dr2 }
${o.tenants ? `tenants:\n${o.tenants}\n` : ''}protections:
${protections}
`;
}

export type Op = { kind: 'data'; disk: number; offset: number; data: Buffer } | { kind: 'zero'; disk: number; offset: number; length: number };

/** The bytes every disk of one recovery point must read. */
export class DiskModel {
  constructor(readonly disks: Buffer[]) {}

  static empty(specs: DiskSpec[]): DiskModel {
    return new DiskModel(specs.map((d) => Buffer.alloc(d.sizeBytes)));
  }

  /** A copy with `ops` applied: the state the point made from them must hold. */
  after(ops: Op[]): DiskModel {
    const disks = this.disks.map((d) => Buffer.from(d));
    for (const op of ops) {
      // Ops past the end of a disk (streams the receiver must refuse) are clamped: such a model is never checked.
      const disk = disks[op.disk];
      if (!disk || op.offset >= disk.length) continue;
      if (op.kind === 'data') op.data.copy(disk, op.offset);
      else disk.fill(0, op.offset, Math.min(disk.length, op.offset + op.length));
    }
    return new DiskModel(disks);
  }
}

/**
 * One encoded stream, frame by frame: `start` (magic, header, chain CRC), then `frames`, each the
 * concatenation of a frame's header and payload, the end frame last.
 */
export interface EncodedStream {
  header: StreamHeader;
  start: Buffer;
  frames: Buffer[];
}

export function streamHeader(o: {
  protection: string;
  disks: DiskSpec[];
  base: string | null;
  n: number;
  kind?: StreamHeader['kind'];
  session?: string;
}): StreamHeader {
  const full = o.base === null || o.kind === 'full';
  return {
    session: o.session ?? randomUUID(),
    protection: o.protection,
    checkpoint: `vmdr-${o.protection}-${o.n}`,
    since: full ? null : `vmdr-${o.protection}-${o.n - 1}`,
    base: o.base,
    kind: o.kind ?? (full ? 'full' : 'incremental'),
    disks: o.disks,
    createdAt: new Date(Date.UTC(2026, 10, 24, 12, 0, o.n)).toISOString(),
  };
}

export function encodeStream(header: StreamHeader, ops: Op[], options: { compressionLevel?: number } = {}): EncodedStream {
  const encoder = new DeltaStreamEncoder(header, options);
  const start = encoder.start();
  const frames: Buffer[] = [];
  const push = (buffers: Buffer[]) => {
    // The encoder returns [header, payload] per frame (a zero frame's payload is empty and omitted).
    let i = 0;
    while (i < buffers.length) {
      const h = buffers[i]!;
      const payloadLength = h.readUInt32BE(28);
      if (payloadLength > 0) {
        frames.push(Buffer.concat([h, buffers[i + 1]!]));
        i += 2;
      } else {
        frames.push(h);
        i += buffers[i + 1]?.length === 0 ? 2 : 1;
      }
    }
  };
  for (const op of ops) push(op.kind === 'data' ? encoder.data(op.disk, op.offset, op.data) : encoder.zero(op.disk, op.offset, op.length));
  push(encoder.end());
  return { header, start, frames };
}

/** The stream header's CRC: every frame's CRC is chained from it. */
export function chainOf(stream: EncodedStream): number {
  return stream.start.readUInt32BE(stream.start.length - 4);
}

/** Rewrites a frame's header fields and seals it again with a correct chained CRC (a lying but well-formed frame). */
export function resealFrame(frame: Buffer, chain: number, edit: (header: Buffer) => void): Buffer {
  const out = Buffer.from(frame);
  edit(out);
  out.writeUInt32BE(crc32(out.subarray(40), crc32(out.subarray(0, 36), chain)), 36);
  return out;
}

export function streamBytes(stream: { start: Buffer; frames: Buffer[] }): Buffer[] {
  return [stream.start, ...stream.frames];
}

export async function* chunks(buffers: Buffer[]): AsyncGenerator<Buffer> {
  for (const b of buffers) yield b;
}

/** Random data and zero ops on random, unaligned ranges of random disks. */
export function randomOps(rng: Prng, disks: DiskSpec[], count: number, maxLength = 512 * KiB): Op[] {
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const disk = rng.int(0, disks.length - 1);
    const size = disks[disk]!.sizeBytes;
    // Half aligned to 512 (what a bitmap-driven source sends), half anywhere: the stream allows both.
    const align = rng.next() < 0.5 ? 512 : 1;
    const length = Math.max(align, Math.floor(rng.int(1, Math.min(maxLength, size)) / align) * align);
    const offset = rng.next() < 0.2 ? size - length : Math.floor(rng.int(0, size - length) / align) * align;
    if (rng.next() < 0.3) ops.push({ kind: 'zero', disk, offset, length });
    else {
      // Mix compressible (repeated pattern) and incompressible data, so both codecs travel.
      const data = rng.next() < 0.5 ? Buffer.alloc(length, rng.int(1, 255)) : rng.bytes(length);
      ops.push({ kind: 'data', disk, offset, data });
    }
  }
  return ops;
}

/** A point's image read back as raw bytes (through its whole backing chain). */
export async function readImage(image: string): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'test-vmdr-raw-'));
  try {
    const raw = join(dir, 'disk.raw');
    await exec('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', image, raw]);
    return await readFile(raw);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function firstDifference(a: Buffer, b: Buffer): number {
  // Equal is the common case: one native comparison instead of a loop over megabytes.
  if (a.equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Every disk of `point` reads exactly the model's bytes, and qemu-img check finds its images clean. */
export async function assertPointHolds(point: RecoveryPoint, model: DiskModel, specs: DiskSpec[], context = ''): Promise<void> {
  assert.deepEqual(
    point.disks.map((d) => [d.disk, d.sizeBytes]),
    specs.map((d) => [d.name, d.sizeBytes]),
    `${context}${point.id} disks`,
  );
  for (const [i, d] of point.disks.entries()) {
    await exec('qemu-img', ['check', '-q', '-U', '-f', 'qcow2', d.image]).catch((err: { stdout?: string; stderr?: string }) => {
      throw new assert.AssertionError({ message: `${context}qemu-img check ${d.image} (${point.id}/${d.disk}) failed: ${err.stdout ?? ''}${err.stderr ?? ''}` });
    });
    const got = await readImage(d.image);
    const want = model.disks[i]!;
    const at = firstDifference(got, want);
    assert.ok(
      at < 0,
      `${context}${point.id}/${d.disk} (${d.image}) differs from the model at byte ${at} (read ${got.length} bytes, model ${want.length}): ` +
        `got ${got.subarray(at, at + 8).toString('hex')}, want ${want.subarray(at, at + 8).toString('hex')}`,
    );
  }
}

/** SHA-256 of each 64 KiB block of `bytes` (the last may be short), as blockHashes computes them. */
export function localHashes(bytes: Buffer, blockSize = HASH_BLOCK): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += blockSize) out.push(createHash('sha256').update(bytes.subarray(at, at + blockSize)).digest());
  return Buffer.concat(out);
}

/** point-*.qcow2 files of a protection's disk directories that no listed point refers to. */
export async function strayPointFiles(storage: string, protection: string, points: RecoveryPoint[]): Promise<string[]> {
  const referenced = new Set(points.flatMap((p) => p.disks.map((d) => d.image)));
  const stray: string[] = [];
  let disks: string[];
  try {
    disks = await readdir(join(storage, protection));
  } catch {
    return [];
  }
  for (const disk of disks) {
    const dir = join(storage, protection, disk);
    for (const f of await readdir(dir).catch(() => [] as string[])) {
      if (isPointFile(f) && !referenced.has(join(dir, f))) stray.push(join(dir, f));
    }
  }
  return stray.sort();
}

/** Polls `check` until it holds or `timeoutMs` passes; the last failure is the error. */
export async function eventually(check: () => Promise<void>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
