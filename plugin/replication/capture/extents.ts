/**
 * Which parts of a disk a cycle ships, as a list of operations: data to read and send, or a range
 * that travels as a zero frame. Built from NBD block status: base:allocation says what is a hole or
 * reads as zeroes (never read, never sent as bytes), the dirty bitmap says what changed.
 */
import { STATE_DIRTY, STATE_ZERO, type NbdExtent } from '../nbd/client.js';

export const ALLOCATION_CONTEXT = 'base:allocation';

export interface ShipOp {
  kind: 'data' | 'zero';
  offset: number;
  length: number;
}

/** Largest read a data op asks for: one delta-stream frame. */
export const MAX_READ = 4 * 1024 * 1024;

/** Every byte of the disk: data where allocated, zero ops where it reads as zeroes. */
export function planFull(allocation: NbdExtent[]): ShipOp[] {
  return split(allocation.map((e) => ({ kind: e.flags & STATE_ZERO ? 'zero' : 'data', offset: e.offset, length: e.length })));
}

/** Only the dirty ranges, each cut along the allocation map so zeroed ranges travel as zero ops. */
export function planIncremental(dirty: NbdExtent[], allocation: NbdExtent[]): ShipOp[] {
  return planRanges(dirty.filter((e) => e.flags & STATE_DIRTY), allocation);
}

/** Arbitrary ranges (sorted, not overlapping), cut along the allocation map. */
export function planRanges(ranges: { offset: number; length: number }[], allocation: NbdExtent[]): ShipOp[] {
  const ops: ShipOp[] = [];
  let a = 0;
  for (const range of ranges) {
    const end = range.offset + range.length;
    while (a < allocation.length && allocation[a]!.offset + allocation[a]!.length <= range.offset) a += 1;
    for (let i = a; i < allocation.length && allocation[i]!.offset < end; i += 1) {
      const e = allocation[i]!;
      const from = Math.max(e.offset, range.offset);
      const to = Math.min(e.offset + e.length, end);
      if (to > from) ops.push({ kind: e.flags & STATE_ZERO ? 'zero' : 'data', offset: from, length: to - from });
    }
  }
  return split(ops);
}

/** Merges touching ops of one kind, then cuts data ops to at most MAX_READ bytes. */
function split(ops: ShipOp[]): ShipOp[] {
  const merged: ShipOp[] = [];
  for (const op of ops) {
    const last = merged[merged.length - 1];
    if (last && last.kind === op.kind && last.offset + last.length === op.offset) last.length += op.length;
    else if (op.length > 0) merged.push({ ...op });
  }
  const out: ShipOp[] = [];
  for (const op of merged) {
    if (op.kind === 'zero') out.push(op);
    else for (let at = 0; at < op.length; at += MAX_READ) out.push({ kind: 'data', offset: op.offset + at, length: Math.min(MAX_READ, op.length - at) });
  }
  return out;
}

export function opBytes(ops: ShipOp[], kind: ShipOp['kind']): number {
  return ops.reduce((sum, op) => (op.kind === kind ? sum + op.length : sum), 0);
}
