/**
 * Fuzzes the delta stream decoder with structure-aware mutations of valid streams
 * (test/helpers/stream-fuzz.ts). Every case must end in one of two ways: the decoder refuses it
 * with a StreamError (a STREAM_* code), or it accepts it and the case was allowed to be valid.
 * Anything else (another exception, a valid stream refused, a must-refuse case accepted, memory
 * growing past the decoder's bound) fails with the seed and case number that replay it:
 *   VMDR_FUZZ_SEED=<seed> VMDR_FUZZ_ONLY=<case> npx mocha … test/unit/replication/stream-fuzz.test.ts
 * The suite runs 2,000 cases, the first of them one per mutator (each is hit at least once);
 * VMDR_FUZZ_CASES enlarges the run (`npm run fuzz` runs 200,000).
 */
import assert from 'node:assert/strict';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { decodeDeltaStream } from '../../../plugin/replication/stream/decode.js';
import { StreamError } from '../../../plugin/replication/stream/errors.js';
import { FrameKind } from '../../../plugin/replication/stream/format.js';
import { KiB, MiB, Prng, chunks, encodeStream, randomOps, streamHeader, type DiskSpec, type EncodedStream, type Op } from '../../helpers/receiver-lab.js';
import { MUTATORS, fuzzSettings, mutate, type FuzzCase } from '../../helpers/stream-fuzz.js';

const DISKS: DiskSpec[] = [
  { name: 'vda', sizeBytes: 8 * MiB },
  { name: 'vdb', sizeBytes: 1 * MiB + 1536 },
];
/**
 * What the run may add to the process whatever the input. A stream being decoded holds about
 * 12 MiB (docs/delta-stream.md, "Memory"); the rest is up to 100 cases' garbage (4 MiB frames),
 * collected between samples. The bomb of issue 9 alone added 3.7 GiB.
 */
const DECODER_BOUND = 128 * MiB;

/**
 * V8's collector, so the test can drop its own garbage (the mutators make megabytes per case)
 * before it samples: what is left to measure is what decoding holds, not what nobody freed yet.
 */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Valid streams to mutate: small frames of both codecs, random ops, and a full 4 MiB frame. */
function baseStreams(rng: Prng): EncodedStream[] {
  const small: Op[] = [
    { kind: 'data', disk: 1, offset: 0, data: Buffer.alloc(128 * KiB, 0x5e) },
    { kind: 'data', disk: 0, offset: 64 * KiB, data: rng.bytes(20 * KiB) },
    { kind: 'zero', disk: 0, offset: 0, length: 32 * KiB },
    { kind: 'data', disk: 1, offset: DISKS[1]!.sizeBytes - 1536, data: Buffer.alloc(1536, 0xab) },
    { kind: 'data', disk: 0, offset: 1 * MiB + 17, data: rng.bytes(5000) },
  ];
  const large: Op[] = [
    { kind: 'data', disk: 0, offset: 0, data: Buffer.alloc(4 * MiB + 4 * KiB, 0x33) },
    { kind: 'zero', disk: 1, offset: 4096, length: 64 * KiB },
  ];
  const header = (n: number, kind?: 'full') =>
    streamHeader({ protection: 'fuzz', disks: DISKS, base: n === 1 ? null : `rp-${n - 1}`, n, session: `fuzz-${rng.int(0, 1e9)}`, ...(kind ? { kind } : {}) });
  return [encodeStream(header(2), small), encodeStream(header(3), randomOps(rng, DISKS, 6, 256 * KiB)), encodeStream(header(1, 'full'), large)];
}

async function decode(c: FuzzCase): Promise<{ accepted: boolean; code?: string; error?: unknown }> {
  try {
    const { frames } = await decodeDeltaStream(chunks(c.chunks));
    for await (const f of frames) if (f.kind === FrameKind.End) return { accepted: true };
    return { accepted: false, error: new Error('frames ended without an end frame and without an error') };
  } catch (err) {
    if (err instanceof StreamError && /^STREAM_[A-Z_]+$/.test(err.code)) return { accepted: false, code: err.code };
    return { accepted: false, error: err };
  }
}

describe('delta stream decoder fuzz (structure-aware mutations of valid streams)', function () {
  const { seed, cases, only } = fuzzSettings(2_000);
  this.timeout(Math.max(120_000, cases * 20));

  it(`refuses every hostile case with a STREAM_* code, accepts the valid ones, within ${DECODER_BOUND / MiB} MiB`, async () => {
    console.log(`      stream fuzz: seed ${seed}, ${cases} cases (replay: VMDR_FUZZ_SEED=${seed} [VMDR_FUZZ_ONLY=<case>], more: VMDR_FUZZ_CASES)`);
    const bases = baseStreams(new Prng(seed));
    for (const b of bases) assert.equal((await decode({ name: 'valid', chunks: [b.start, ...b.frames], mustRefuse: false, identical: true })).accepted, true);

    const gc = collector();
    gc();
    const codes = new Map<string, number>();
    let accepted = 0;
    const rssBefore = process.memoryUsage().rss;
    let peakRss = rssBefore;
    const peakBefore = process.resourceUsage().maxRSS * 1024;
    const mutated = new Set<string>();
    const t0 = performance.now();
    for (let i = only ?? 0; i < (only === undefined ? cases : only + 1); i++) {
      const rng = new Prng((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
      // The first cases go through every mutator once, the zstd ones on the small stream (its frames are zstd).
      const mutator = MUTATORS[i];
      const which = mutator?.startsWith('zstd.') ? 0 : i % bases.length;
      const c = mutate(bases[which]!, { other: bases[(which + 1) % bases.length]!, diskSizes: DISKS.map((d) => d.sizeBytes) }, rng, mutator);
      mutated.add(c.name.split(/[+ ]/)[0]!);
      const got = await decode(c);
      const where = `case ${i} (${c.name}); replay: VMDR_FUZZ_SEED=${seed} VMDR_FUZZ_ONLY=${i}`;
      if (got.error) assert.fail(`${where}: the decoder threw ${String((got.error as Error).stack ?? got.error)}`);
      if (got.accepted && c.mustRefuse) assert.fail(`${where}: a stream that must be refused was accepted`);
      if (!got.accepted && c.identical) assert.fail(`${where}: the valid stream was refused with ${got.code}`);
      if (got.accepted) accepted += 1;
      else codes.set(got.code!, (codes.get(got.code!) ?? 0) + 1);
      if (i % 100 === 0) {
        gc();
        // Decoding runs on promises alone; let the event loop breathe so the memory is sampled.
        await yieldToLoop();
        peakRss = Math.max(peakRss, process.memoryUsage().rss);
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const grew = Math.max(peakRss - rssBefore, process.resourceUsage().maxRSS * 1024 - Math.max(peakBefore, rssBefore));
    const ran = only === undefined ? cases : 1;
    console.log(
      `      ${ran} cases in ${seconds.toFixed(1)} s (${Math.round(ran / seconds)}/s); accepted ${accepted}; refused ${[...codes].map(([k, v]) => `${k} ${v}`).join(', ')}; ` +
        `peak RSS ${(peakRss / MiB).toFixed(0)} MiB (+${(grew / MiB).toFixed(1)} MiB)`,
    );
    assert.ok(grew < DECODER_BOUND, `the process grew by ${(grew / MiB).toFixed(1)} MiB while decoding hostile streams`);
    if (only === undefined && cases >= MUTATORS.length) assert.deepEqual(MUTATORS.filter((m) => !mutated.has(m)), [], 'mutators never applied');
  });
});
