/**
 * Bandwidth limits: which limit a schedule gives at a local time (weekday edges, windows past
 * midnight, the first rule winning), what the config check says of a window or rate that does not
 * parse, and the limiter on a fake clock (the rate held, a window change acting at once, two
 * protections sharing a link equally, the chunks handed on without a copy).
 */
import assert from 'node:assert/strict';
import { parseConfig } from '../../../plugin/config/load.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { pacer, pacerFor } from '../../../plugin/replication/bandwidth/gate.js';
import { TokenBucket, type Clock } from '../../../plugin/replication/bandwidth/limiter.js';
import { BandwidthSchema, formatRate, limitAt, nextLimitChange } from '../../../plugin/config/bandwidth.js';
import { bandwidthInForce, bandwidthsInForce } from '../../../plugin/replication/bandwidth/in-force.js';
import { drawProgress, PaceMeter } from '../../../scripts/cli/progress.js';

const MB = 1e6;
// 2026-01-05 is a Monday; times are the host's local time, as the schedule reads them.
const at = (day: number, hh: number, mm = 0, ss = 0) => new Date(2026, 0, 5 + day, hh, mm, ss);
const MON = 0;
const FRI = 4;
const SAT = 5;
const tue = MON + 1;
const SUN = 6;

/** A clock whose sleeps resolve in time order as soon as everyone waiting is asleep. */
class FakeClock implements Clock {
  t = 0;
  private readonly sleepers: { at: number; wake: () => void }[] = [];
  now = () => this.t;
  sleep = (ms: number) => new Promise<void>((wake) => this.sleepers.push({ at: this.t + ms, wake }));
  /** Runs until `done` settles, moving time to the next sleeper whenever nothing else can run. */
  async run<T>(done: Promise<T>): Promise<T> {
    let settled = false;
    void done.finally(() => (settled = true)).catch(() => undefined);
    while (!settled) {
      await new Promise((r) => setImmediate(r));
      if (settled || this.sleepers.length === 0) continue;
      this.sleepers.sort((a, b) => a.at - b.at);
      const next = this.sleepers.shift()!;
      this.t = Math.max(this.t, next.at);
      next.wake();
    }
    return done;
  }
}

async function* chunks(count: number, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < count; i++) yield Buffer.alloc(size, i);
}

/** Pulls `body` to its end; answers the clock time each chunk came out and its size. */
async function drain(clock: FakeClock, body: AsyncIterable<Buffer>): Promise<{ t: number; bytes: number }[]> {
  const out: { t: number; bytes: number }[] = [];
  for await (const c of body) out.push({ t: clock.now(), bytes: c.length });
  return out;
}

const bytesBetween = (log: { t: number; bytes: number }[], from: number, to: number) => log.filter((e) => e.t >= from && e.t < to).reduce((s, e) => s + e.bytes, 0);

describe('bandwidth limits', () => {
  describe('schedule', () => {
    const schedule = BandwidthSchema.parse([
      { limit: '20MB/s', days: 'mon-fri', from: '08:00', to: '20:00' },
      { limit: '50MB/s', days: 'fri', from: '22:00', to: '06:00' },
      { limit: 'unlimited' },
    ]);

    it('gives the first rule whose window holds at the local time; the end of a window is outside it', () => {
      assert.equal(limitAt(schedule, at(MON, 8)), 20 * MB);
      assert.equal(limitAt(schedule, at(MON, 7, 59, 59)), Infinity);
      assert.equal(limitAt(schedule, at(FRI, 19, 59, 59)), 20 * MB);
      assert.equal(limitAt(schedule, at(FRI, 20)), Infinity);
      assert.equal(limitAt(schedule, at(SAT, 12)), Infinity, 'not on a weekend');
      assert.equal(limitAt(schedule, at(SUN, 9)), Infinity);
    });

    it('runs a window whose from is after its to past midnight, on the days it starts', () => {
      assert.equal(limitAt(schedule, at(FRI, 22)), 50 * MB);
      assert.equal(limitAt(schedule, at(FRI, 23, 59, 59)), 50 * MB);
      assert.equal(limitAt(schedule, at(SAT, 0)), 50 * MB, 'Saturday morning is Friday night still');
      assert.equal(limitAt(schedule, at(SAT, 5, 59, 59)), 50 * MB);
      assert.equal(limitAt(schedule, at(SAT, 6)), Infinity);
      assert.equal(limitAt(schedule, at(SAT, 22)), Infinity, 'Saturday evening starts no window');
      assert.equal(limitAt(schedule, at(FRI, 3)), Infinity, 'Friday morning follows Thursday, which starts none');
    });

    it('reads a plain rate as one rule for every time; rates in bytes, binary units and bits', () => {
      assert.equal(limitAt(BandwidthSchema.parse('5MB/s'), at(SUN, 3)), 5 * MB);
      assert.equal(limitAt(BandwidthSchema.parse('5MiB/s'), at(SUN, 3)), 5 * 1024 * 1024);
      assert.equal(limitAt(BandwidthSchema.parse('100Mbit/s'), at(SUN, 3)), 12.5 * MB);
      assert.equal(limitAt(undefined, at(SUN, 3)), Infinity);
      assert.equal(limitAt(BandwidthSchema.parse([{ limit: '1MB/s', days: 'sat-sun' }]), at(MON, 3)), Infinity, 'no rule matches: unlimited');
      assert.equal(formatRate(20 * MB), '20 MB/s');
      assert.equal(formatRate(Infinity), 'unlimited');
    });

    it('follows the wall clock across DST (Europe/Paris, 2026): a window in the skipped hour does not happen, one in the repeated hour holds twice', () => {
      const tz = process.env.TZ;
      process.env.TZ = 'Europe/Paris';
      try {
        const night = BandwidthSchema.parse([{ limit: '1MB/s', from: '02:00', to: '03:00' }]);
        // 29 March: 02:00 CET is 03:00 CEST; 01:00Z is the first second after 01:59:59 local.
        assert.equal(limitAt(night, new Date(Date.UTC(2026, 2, 29, 0, 59, 59))), Infinity);
        assert.equal(limitAt(night, new Date(Date.UTC(2026, 2, 29, 1, 0, 0))), Infinity, '03:00 local: the window was skipped');
        // 25 October: 02:30 local happens at 00:30Z (CEST) and again at 01:30Z (CET).
        assert.equal(limitAt(night, new Date(Date.UTC(2026, 9, 25, 0, 30))), MB);
        assert.equal(limitAt(night, new Date(Date.UTC(2026, 9, 25, 1, 30))), MB);
        assert.equal(limitAt(night, new Date(Date.UTC(2026, 9, 25, 2, 0))), Infinity, '03:00 CET');
      } finally {
        if (tz === undefined) delete process.env.TZ;
        else process.env.TZ = tz;
      }
    });

    it('finds the next change of the tightest limit: a window closing, the weekend, past midnight; none for a plain rate', () => {
      assert.deepEqual(nextLimitChange([schedule], at(MON, 9)), { at: at(MON, 20), limit: Infinity });
      assert.deepEqual(nextLimitChange([schedule], at(MON, 20)), { at: at(tue, 8), limit: 20 * MB });
      assert.deepEqual(nextLimitChange([schedule], at(FRI, 21)), { at: at(FRI, 22), limit: 50 * MB });
      assert.deepEqual(nextLimitChange([schedule], at(SAT, 1)), { at: at(SAT, 6), limit: Infinity });
      assert.deepEqual(nextLimitChange([schedule], at(SAT, 6)), { at: at(MON + 7, 8), limit: 20 * MB }, 'over the weekend to Monday');
      const own = BandwidthSchema.parse('30MB/s');
      assert.deepEqual(nextLimitChange([own, schedule], at(MON, 9)), { at: at(MON, 20), limit: 30 * MB }, 'the tighter of two');
      assert.equal(nextLimitChange([BandwidthSchema.parse('10MB/s'), schedule], at(MON, 9)), undefined, 'a tighter plain rate never changes');
      assert.equal(nextLimitChange([undefined, own], at(MON, 9)), undefined);
    });

    it('takes windows to the second (HH:MM:SS) and 24:00 as an end', () => {
      const s = BandwidthSchema.parse([{ limit: '1MB/s', from: '12:00:30', to: '24:00' }]);
      assert.equal(limitAt(s, at(MON, 12, 0, 29)), Infinity);
      assert.equal(limitAt(s, at(MON, 12, 0, 30)), MB);
      assert.equal(limitAt(s, at(MON, 23, 59, 59)), MB);
    });
  });

  describe('config check', () => {
    const config = (site: string, protection = '') => `version: 1
sites:
  - name: prod
    uri: test:///default
  - name: dr
    uri: test:///default
    bandwidth: ${site}
protections:
  - name: web
    source: { site: prod, vm: web }
    target: { site: dr, vm: web-dr, nics: [{ network: n }] }
${protection}`;
    const refused = (text: string, expected: RegExp) =>
      assert.throws(
        () => parseConfig(text, 'vmdr.yaml'),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'CONFIG_INVALID');
          assert.match(err.message, expected);
          assert.doesNotMatch(err.message, /\n/, 'one line');
          return true;
        },
      );

    it('loads a site link schedule and a protection rate', () => {
      const c = parseConfig(config('[{ limit: 20MB/s, days: mon-fri, from: "08:00", to: "20:00" }, { limit: unlimited }]', '    bandwidth: 5MB/s\n'), 'vmdr.yaml');
      assert.equal(limitAt(c.sites[1]!.bandwidth, at(MON, 9)), 20 * MB);
      assert.equal(limitAt(c.protections[0]!.bandwidth, at(SUN, 9)), 5 * MB);
    });

    it('refuses a window or rate that does not parse, naming its path, one line each', () => {
      refused(config('[{ limit: 20MB/s, from: "25:00", to: "26:00" }]'), /sites\[1\]\.bandwidth\[0\]\.from: "25:00" is not a time of day/);
      refused(config('[{ limit: 20MB/s, from: "08:00", to: "08:00" }]'), /sites\[1\]\.bandwidth\[0\]\.to: a window that ends when it starts/);
      refused(config('[{ limit: 20MB/s, days: mon-fry }]'), /sites\[1\]\.bandwidth\[0\]\.days: "mon-fry" is not a day/);
      refused(config('"20 MB"'), /sites\[1\]\.bandwidth: "20 MB" is not a rate such as 20MB\/s/);
      refused(config('0MB/s'), /sites\[1\]\.bandwidth: "0MB\/s" is too small/);
      refused(config('[{ limit: 20MB }]'), /sites\[1\]\.bandwidth\[0\]\.limit: "20MB" is not a rate/);
      refused(config('[{ limit: 1MB/s }, { limit: 2MB/s, days: sat }]'), /sites\[1\]\.bandwidth\[1\]: never used: rule 0/);
      refused(config('5MB/s', '    bandwidth: { limit: 5MB/s, at: "08:00" }\n'), /protections\[0\]\.bandwidth: .*a list of rules/);
    });

    it("what status shows is the pacer's limit, with whose it is and the next change", () => {
      const c = parseConfig(config('[{ limit: 20MB/s, days: mon-fri, from: "08:00", to: "20:00" }]', '    bandwidth: 30MB/s\n'), 'vmdr.yaml');
      const p = c.protections[0]!;
      assert.deepEqual(bandwidthInForce(c, p, at(MON, 9)), { limit: 20 * MB, source: 'site-link', site: 'dr', next: { at: at(MON, 20).toISOString(), limit: 30 * MB, source: 'protection' } });
      assert.deepEqual(bandwidthInForce(c, p, at(SAT, 9)), { limit: 30 * MB, source: 'protection', site: 'dr', next: { at: at(MON + 7, 8).toISOString(), limit: 20 * MB, source: 'site-link' } });
      delete p.bandwidth;
      assert.deepEqual(bandwidthInForce(c, p, at(SAT, 9)), { limit: null, source: null, site: 'dr', next: { at: at(MON + 7, 8).toISOString(), limit: 20 * MB, source: 'site-link' } });
    });

    it('a status call reads each set of schedules once: every protection gets what bandwidthInForce says of it alone', () => {
      const more = (name: string, site: string, own = '') => `  - name: ${name}\n    source: { site: prod, vm: ${name} }\n    target: { site: ${site}, vm: ${name}-dr, nics: [{ network: n }] }\n${own}`;
      const c = parseConfig(
        config(
          '[{ limit: 20MB/s, days: mon-fri, from: "08:00", to: "20:00" }, { limit: 50MB/s, days: sat, from: "22:00", to: "06:00" }]',
          '    bandwidth: 30MB/s\n' + more('a', 'dr') + more('b', 'dr') + more('c', 'dr', '    bandwidth: 30MB/s\n') + more('d', 'dr', '    bandwidth: [{ limit: 10MB/s, from: "19:00", to: "21:00" }]\n') + more('e', 'prod'),
        ),
        'vmdr.yaml',
      );
      for (const when of [at(MON, 9), at(MON, 19, 30), at(FRI, 23), at(SAT, 9)]) {
        const of = bandwidthsInForce(c, when);
        for (const p of c.protections) assert.deepEqual(of(p), bandwidthInForce(c, p, when), `${p.name} at ${when.toString()}`);
        const [, a, b] = c.protections;
        assert.equal(of(a!), of(b!), 'two protections on one link, with no limit of their own, share one answer');
      }
    });

    it("a cycle's pacer reads the live config: a reload's new limits act within a second, none configured means no pacing", async () => {
      const c = parseConfig(config('20MB/s', '    bandwidth: 5MB/s\n'), 'vmdr.yaml');
      const p = pacerFor(c, c.protections[0]!);
      assert.equal(p.limit(), 5 * MB);
      // What a daemon's reload does: the config object changed in place (plugin/config/live.ts).
      c.protections[0]!.bandwidth = BandwidthSchema.parse('50MB/s');
      await sleep(300);
      assert.equal(p.limit(), 20 * MB, "the link's limit is now the tighter");
      delete c.protections[0]!.bandwidth;
      c.sites[1]!.bandwidth = undefined;
      await sleep(300);
      assert.equal(p.limit(), Infinity);
      assert.equal(p.configured(), false);
    });
  });

  describe('limiter (fake clock)', () => {
    it('lets bytes out at the rate, in pieces of the chunks it was given (no copy)', async () => {
      const clock = new FakeClock();
      const given: Buffer[] = [];
      async function* body() {
        for (let i = 0; i < 40; i++) {
          const b = Buffer.alloc(256 * 1024, i);
          given.push(b);
          yield b;
        }
      }
      const p = pacer([new TokenBucket(() => MB, clock)], clock);
      const out: Buffer[] = [];
      const done = (async () => {
        for await (const c of p.pace(body())) out.push(c);
      })();
      await clock.run(done);
      const total = out.reduce((s, c) => s + c.length, 0);
      assert.equal(total, 40 * 256 * 1024);
      // 10.5 MB at 1 MB/s, less the 100 ms an idle bucket may bank.
      assert.ok(Math.abs(clock.now() / 1000 - total / MB) < 0.15, `${clock.now()} ms for ${total} bytes`);
      assert.ok(out.every((c) => given.some((g) => g.buffer === c.buffer)), 'every piece is a view of a chunk given');
      assert.equal(p.limit(), MB);
    });

    it('follows a window change within one chunk: 4 MB/s, then 1 MB/s from t = 5 s', async () => {
      const clock = new FakeClock();
      const p = pacer([new TokenBucket((t) => (t < 5000 ? 4 * MB : MB), clock)], clock);
      const log = await clock.run(drain(clock, p.pace(chunks(100, 256 * 1024))));
      const rate = (from: number, to: number) => bytesBetween(log, from, to) / ((to - from) / 1000);
      assert.ok(Math.abs(rate(1000, 5000) - 4 * MB) < 0.05 * 4 * MB, `before: ${rate(1000, 5000)}`);
      assert.ok(Math.abs(rate(5100, 9000) - MB) < 0.05 * MB, `after: ${rate(5100, 9000)}`);
    });

    it('holds each protection to the tighter of its own limit and its link, and shares a link equally', async () => {
      const clock = new FakeClock();
      const link = new TokenBucket(() => 4 * MB, clock);
      const a = pacer([new TokenBucket(() => Infinity, clock), link], clock);
      const b = pacer([new TokenBucket(() => Infinity, clock), link], clock);
      const c = pacer([new TokenBucket(() => MB, clock), link], clock);
      const logs = await clock.run(Promise.all([a, b, c].map((p) => drain(clock, p.pace(chunks(64, 256 * 1024))))));
      const rate = (i: number) => bytesBetween(logs[i]!, 1000, 4000) / 3;
      // c is held to its own 1 MB/s; a and b share what is left of the link's 4 MB/s.
      assert.ok(Math.abs(rate(2) - MB) < 0.05 * MB, `c: ${rate(2)}`);
      assert.ok(Math.abs(rate(0) - 1.5 * MB) < 0.1 * 1.5 * MB, `a: ${rate(0)}`);
      assert.ok(Math.abs(rate(1) - 1.5 * MB) < 0.1 * 1.5 * MB, `b: ${rate(1)}`);
    });
  });

  it('shows the limit on the bar, and the time left as bytes left / limit', () => {
    let t = 0;
    const meter = new PaceMeter(() => t);
    const p = { phase: 'ship', unit: 'bytes' as const, done: 0, total: 100 * MB, limit: 10 * MB, subject: { protection: 'web' } };
    meter.pace(p);
    t = 1000;
    const pace = meter.pace({ ...p, done: 30 * MB });
    assert.equal(pace.etaSeconds, 7);
    assert.match(drawProgress({ ...p, done: 30 * MB }, pace), /\(limit 10 MB\/s\) ETA 7s$/);
  });
});
