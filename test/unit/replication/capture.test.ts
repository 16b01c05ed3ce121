import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { differingRanges, HASH_BYTES } from '../../../plugin/replication/capture/block-hashes.js';
import { MAX_READ, planFull, planIncremental, planRanges } from '../../../plugin/replication/capture/extents.js';
import { readAhead } from '../../../plugin/replication/capture/read-ahead.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const DATA = 0;
const ZERO = 2; // base:allocation ZERO
const HOLE_ZERO = 3;

describe('what a cycle ships', () => {
  it('full: data where allocated, zero ops for holes, data cut into frame-sized reads', () => {
    const ops = planFull([
      { offset: 0, length: 10 * MiB, flags: DATA },
      { offset: 10 * MiB, length: 6 * MiB, flags: HOLE_ZERO },
      { offset: 16 * MiB, length: 512, flags: DATA },
    ]);
    assert.deepEqual(ops, [
      { kind: 'data', offset: 0, length: MAX_READ },
      { kind: 'data', offset: MAX_READ, length: MAX_READ },
      { kind: 'data', offset: 2 * MAX_READ, length: 10 * MiB - 2 * MAX_READ },
      { kind: 'zero', offset: 10 * MiB, length: 6 * MiB },
      { kind: 'data', offset: 16 * MiB, length: 512 },
    ]);
  });

  it('incremental: only dirty ranges, zeroed parts of them as zero ops', () => {
    const dirty = [
      { offset: 0, length: 64 * KiB, flags: 0 },
      { offset: 64 * KiB, length: 128 * KiB, flags: 1 },
      { offset: 192 * KiB, length: 1 * MiB, flags: 0 },
      { offset: 1 * MiB + 192 * KiB, length: 64 * KiB, flags: 1 },
    ];
    const allocation = [
      { offset: 0, length: 128 * KiB, flags: DATA },
      { offset: 128 * KiB, length: 1 * MiB + 128 * KiB, flags: ZERO },
    ];
    assert.deepEqual(planIncremental(dirty, allocation), [
      { kind: 'data', offset: 64 * KiB, length: 64 * KiB },
      { kind: 'zero', offset: 128 * KiB, length: 64 * KiB },
      { kind: 'zero', offset: 1 * MiB + 192 * KiB, length: 64 * KiB },
    ]);
  });

  it('ranges past the allocation map ship nothing; touching ops of one kind merge', () => {
    const allocation = [{ offset: 0, length: 1 * MiB, flags: DATA }];
    assert.deepEqual(planRanges([{ offset: 0, length: 64 * KiB }, { offset: 64 * KiB, length: 64 * KiB }, { offset: 2 * MiB, length: 4 }], allocation), [
      { kind: 'data', offset: 0, length: 128 * KiB },
    ]);
  });

  it('differing blocks: changed, and missing on the replica side, with a short last block', () => {
    const h = (s: string) => createHash('sha256').update(s).digest();
    const size = 3 * 64 * KiB + 100;
    const source = Buffer.concat([h('a'), h('b'), h('c'), h('d')]);
    const replica = Buffer.concat([h('a'), h('x'), h('c')]);
    assert.equal(source.length, 4 * HASH_BYTES);
    assert.deepEqual(differingRanges(source, replica, size), [
      { offset: 64 * KiB, length: 64 * KiB },
      { offset: 3 * 64 * KiB, length: 100 },
    ]);
    assert.deepEqual(differingRanges(source, source, size), []);
  });

  it('read-ahead keeps at most `window` fetches running and yields in order', async () => {
    let running = 0;
    let peak = 0;
    const fetch = async (n: number) => {
      running += 1;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, (10 - n) * 2));
      running -= 1;
      return n * n;
    };
    const out: number[] = [];
    for await (const [, v] of readAhead([...Array(10).keys()], fetch, 3)) out.push(v);
    assert.deepEqual(out, [...Array(10).keys()].map((n) => n * n));
    assert.equal(peak, 3);
  });

  it('read-ahead surfaces a failed fetch at its turn, without an unhandled rejection', async () => {
    const fetch = async (n: number) => {
      if (n === 2) throw new Error('EIO at 2');
      return n;
    };
    const seen: number[] = [];
    await assert.rejects(
      (async () => {
        for await (const [n] of readAhead([0, 1, 2, 3, 4], fetch, 4)) seen.push(n);
      })(),
      /EIO at 2/,
    );
    assert.deepEqual(seen, [0, 1]);
  });
});
