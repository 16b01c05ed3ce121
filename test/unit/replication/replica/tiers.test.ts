import assert from 'node:assert/strict';
import { ConfigInvalid } from '../../../../plugin/config/errors.js';
import { parseConfig } from '../../../../plugin/config/load.js';
import { keptBy, retentionCut, type KeptBy, type RetentionPolicy } from '../../../../plugin/replication/replica/retention.js';
import type { PointRow } from '../../../../plugin/state/points.js';

const S = 1_000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;
const T0 = Date.UTC(2026, 10, 1); // a midnight: buckets start with the points
const COUNT = (3 * D) / S; // three days at one point a second
const NOW = new Date(T0 + COUNT * S); // one second after the newest point

/** Point i (0-based) taken at T0 + i s; seq i + 1. */
function points(marks: { pinned?: number[]; replaced?: number[] } = {}): PointRow[] {
  return Array.from({ length: COUNT }, (_, i) => ({
    protection: 'web',
    seq: i + 1,
    timeMs: T0 + i * S,
    committedAtMs: T0 + i * S,
    checkpoint: `c${i}`,
    since: null,
    kind: 'incremental' as const,
    bytesShipped: 0,
    dataBytes: 0,
    zeroBytes: 0,
    pinned: marks.pinned?.includes(i) ?? false,
    replacedSource: marks.replaced?.includes(i) ? 'uuid-old' : null,
    disks: [],
  }));
}

/** Indexes from `from` to `to` (inclusive) by `step`. */
const range = (from: number, to: number, step = 1) => Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, k) => from + k * step);

/** The indexes each reason keeps, sorted. */
function byReason(kept: Map<number, KeptBy>): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [seq, why] of [...kept].sort((a, b) => a[0] - b[0])) (out[why] ??= []).push(seq - 1);
  return out;
}

const TIERED: RetentionPolicy = { tiers: { all: 15 * M, minutely: 6 * H, hourly: 1 * D, daily: 30 * D } };
const last = COUNT - 1;
// Ages are NOW - time: point i is COUNT - i seconds old.
const all = range(last - 899, last - 1); // 900 s old and younger, the newest apart
const minutely = range(3960 * 60 + 59, 4304 * 60 + 59, 60); // the newest of each minute 6 h back, until `all` takes over
const hourly = range(48 * 3600 + 3599, 65 * 3600 + 3599, 3600); // the newest of each hour of the last day, until minutely takes over
const daily = [86_399, 172_799]; // the newest of days 0 and 1 (day 2's is the newest point)

describe('retention tiers: which points stay (3 days at 1 s, fake clock)', () => {
  const cases: { name: string; policy: RetentionPolicy; marks?: { pinned?: number[]; replaced?: number[] }; expected: Record<string, number[]> }[] = [
    { name: 'all 15m, minutely 6h, hourly 1d, daily 30d', policy: TIERED, expected: { all, minutely, hourly, daily, newest: [last] } },
    {
      name: 'the same with rp-100001 pinned: it and every point under it stay',
      policy: TIERED,
      marks: { pinned: [100_000] },
      expected: { all, minutely, hourly, daily, newest: [last], pinned: [100_000], 'held-by-pin': range(0, 99_999).filter((i) => i !== 86_399) },
    },
    {
      name: 'a point kept for a replaced source VM holds like a pin',
      policy: TIERED,
      marks: { replaced: [5] },
      expected: { all, minutely, hourly, daily, newest: [last], replaced: [5], 'held-by-pin': range(0, 4) },
    },
    { name: 'all 15m, daily 30d: no minutes nor hours', policy: { tiers: { all: 15 * M, daily: 30 * D } }, expected: { all, daily, newest: [last] } },
    {
      name: 'hourly 2h alone: the newest of each hour whose point is at most 2 h old',
      policy: { tiers: { hourly: 2 * H } },
      // Hour 70's newest (i = 255599) is 3601 s old, hour 69's 7201 s (past 2 h); hour 71's is the newest point.
      expected: { hourly: [70 * 3600 + 3599], newest: [last] },
    },
    { name: 'keep 3 (no tiers): the newest three', policy: { keep: 3 }, expected: { keep: [last - 2, last - 1], newest: [last] } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(byReason(keptBy(points(c.marks), c.policy, NOW)), Object.fromEntries(Object.entries(c.expected).sort()) as Record<string, number[]>);
    });
  }

  it('cuts the rest into the prefix merged into base and runs between kept points, each dropped exactly once', () => {
    const list = points();
    const cut = retentionCut(list, TIERED, NOW);
    const kept = new Set([...all, ...minutely, ...hourly, ...daily, last]);
    assert.deepEqual(cut.prefix?.drop.map((p) => p.seq - 1), range(0, 86_398));
    assert.equal(cut.prefix?.target.seq, 86_400);
    const dropped = [...cut.prefix!.drop, ...cut.middles.flatMap((m) => m.drop)].map((p) => p.seq - 1).sort((a, b) => a - b);
    assert.deepEqual(dropped, range(0, last).filter((i) => !kept.has(i)));
    for (const m of cut.middles) {
      assert.ok(kept.has(m.below.seq - 1) && kept.has(m.above.seq - 1), `run ${m.drop[0]!.seq}..${m.drop.at(-1)!.seq} lies between kept points`);
      assert.equal(m.below.seq + 1, m.drop[0]!.seq);
      assert.equal(m.drop.at(-1)!.seq + 1, m.above.seq);
    }
    // One run under each kept point above the oldest, but where `all` begins (every point stays from there).
    assert.equal(cut.middles.length, daily.length - 1 + hourly.length + minutely.length);
    assert.equal(cut.skipped, undefined);
  });

  it('with a pin: nothing under it goes, no merge into base, and says which points the pin holds', () => {
    const cut = retentionCut(points({ pinned: [100_000] }), TIERED, NOW);
    assert.equal(cut.prefix, undefined);
    assert.ok(cut.middles.every((m) => m.below.seq - 1 >= 100_000));
    assert.match(cut.skipped ?? '', /^rp-1, rp-2, … rp-100000 \(99999 points\) kept: under pinned rp-100001$/);
  });
});

describe('retention tiers in the config', () => {
  const config = (retention: string, extra = '') => `version: 1
sites:
  - name: prod
    uri: test:///default
protections:
  - name: web
    source: { site: prod, vm: web }
    target: { site: prod, vm: web-dr, nics: [{ network: dr }] }
    retention: ${retention}
${extra}`;
  const refused = (text: string, pattern: RegExp) =>
    assert.throws(
      () => parseConfig(text, 'vmdr.yaml'),
      (err: unknown) => err instanceof ConfigInvalid && err.code === 'CONFIG_INVALID' && pattern.test(err.message),
    );

  it('reads tiers as milliseconds; keep/maxAge still mean what they did; nothing given is keep 24', () => {
    assert.deepEqual(parseConfig(config('{ all: 15m, minutely: 6h, hourly: 7d, daily: 30d }'), 'vmdr.yaml').protections[0]!.retention, {
      tiers: { all: 15 * M, minutely: 6 * H, hourly: 7 * D, daily: 30 * D },
    });
    assert.deepEqual(parseConfig(config('{ keep: 5, maxAge: 2h }'), 'vmdr.yaml').protections[0]!.retention, { keep: 5, maxAge: 2 * H });
    assert.deepEqual(parseConfig(config('{}'), 'vmdr.yaml').protections[0]!.retention, { keep: 24 });
  });

  it('refuses tiers in the wrong order, naming the tier', () => {
    refused(config('{ all: 2h, minutely: 1h }'), /protections\[0\]\.retention\.minutely: tiers in order all ≤ minutely ≤ hourly ≤ daily: minutely is shorter than all$/);
    refused(config('{ hourly: 30d, daily: 7d }'), /retention\.daily: tiers in order .*daily is shorter than hourly$/);
  });

  it('refuses a tier shorter than the cycle interval (rpo/2), unless the protection is continuous', () => {
    refused(config('{ all: 10m, hourly: 7d }', '    rpo: 1h\n'), /protections\[0\]\.retention\.all: the all tier is shorter than the cycle interval \(1800s, half the rpo\)/);
    assert.ok(parseConfig(config('{ all: 10m, hourly: 7d }', '    rpo: 1h\n    continuous: true\n'), 'vmdr.yaml'));
  });

  it('refuses a tier shorter than its own bucket, unknown keys, unparsable durations, and tiers mixed with keep', () => {
    refused(config('{ hourly: 30m }'), /retention\.hourly: the hourly tier at least 3600s: shorter, it holds no whole hour$/);
    refused(config('{ daily: 12h }'), /retention\.daily: the daily tier at least 86400s: shorter, it holds no whole day$/);
    refused(config('{ all: 15m, weekly: 8w }'), /retention: unknown key "weekly"$/);
    refused(config('{ all: 15 minutes }'), /retention\.all: a duration such as 30s, 15m, 4h or 7d$/);
    refused(config('{ all: 15m, keep: 3 }'), /retention\.keep: either keep and maxAge or time tiers \(all, minutely, hourly, daily\), not both$/);
  });
});
