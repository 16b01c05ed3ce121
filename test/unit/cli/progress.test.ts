import assert from 'node:assert/strict';
import type { Progress } from '../../../hypervisors/types.js';
import { drawProgress, formatDuration, PaceMeter, secondsLeft, progressReporter, ProgressThrottle, stepLog } from '../../../scripts/cli/progress.js';
import { assertProgress, jsonLines, type ProgressEvent } from '../../helpers/assertions.js';

const MiB = 1024 * 1024;
const web = { protection: 'web', vm: 'acme-web' };
const ship = (done: number, total = 32 * MiB): Progress => ({ phase: 'ship', unit: 'bytes', done, total, subject: web });

/** What a terminal or a pipe receives, as a string. */
function sink(isTTY: boolean): { text: string; write(s: string): boolean; isTTY: boolean } {
  return {
    text: '',
    isTTY,
    write(s: string) {
      this.text += s;
      return true;
    },
  };
}

describe('progress drawing and throttling (scripts/cli/progress.ts)', () => {
  it('draws bytes as a bar with rate and ETA, steps as one line each', () => {
    assert.equal(
      drawProgress(ship(8 * MiB), { bytesPerSecond: 4 * MiB, etaSeconds: 6 }),
      'web ship [######------------------]  25% 8.0 MiB/32.0 MiB 4.0 MiB/s ETA 6s',
    );
    // Over: full bar, no ETA.
    assert.equal(drawProgress({ ...ship(32 * MiB), detail: 'committed rp-3' }, { bytesPerSecond: 4 * MiB, etaSeconds: 0 }), 'web ship [########################] 100% 32.0 MiB/32.0 MiB 4.0 MiB/s committed rp-3');
    assert.equal(drawProgress({ phase: 'copy', unit: 'bytes', done: 0, total: 0, subject: { protection: 'web', disk: 'vdb' } }), 'web/vdb copy [########################] 100% 0 B/0 B');
    assert.equal(drawProgress({ phase: 'stop-source', unit: 'steps', done: 1, total: 1, subject: { failover: 'fo-1', protection: 'db' }, detail: 'done' }), 'db stop-source 1/1 done');
    assert.equal(drawProgress({ phase: 'preflight', unit: 'steps', done: 0, total: 1, subject: { failover: 'fo-1' }, detail: 'started' }), 'run fo-1 preflight 0/1 started');
    assert.equal(drawProgress({ phase: 'merge', unit: 'steps', done: 2, total: 4, subject: { protection: 'web', point: 'rp-7' }, detail: 'disk vda' }), 'web rp-7 merge 2/4 disk vda');
    assert.equal(formatDuration(185), '3m05s');
    assert.equal(formatDuration(7450), '2h04m');
  });

  it('lets through per subject the first event of a phase, its end, and at most one per interval', () => {
    let now = 0;
    const t = new ProgressThrottle(250, () => now);
    const passed: number[] = [];
    for (let i = 0; i <= 100; i++) {
      now = i * 10; // an event every 10 ms for a second
      if (t.pass(ship(i, 100))) passed.push(i);
    }
    assert.deepEqual(passed, [0, 25, 50, 75, 100]);
    // Another subject in the same instant is its own stream; a new phase always passes.
    assert.equal(t.pass({ ...ship(1, 100), subject: { protection: 'db' } }), true);
    assert.equal(t.pass({ phase: 'prepare', unit: 'steps', done: 0, total: 1, subject: web }), true);
    assert.equal(t.pass({ phase: 'prepare', unit: 'steps', done: 1, total: 1, subject: web }), true, 'the end of a phase is never dropped');
  });

  it('measures the rate from the phase\'s first event and the time left at that rate', () => {
    let now = 1_000;
    const meter = new PaceMeter(() => now);
    assert.deepEqual(meter.pace(ship(0, 100 * MiB)), {});
    now += 100;
    assert.deepEqual(meter.pace(ship(1 * MiB, 100 * MiB)), {}, 'too early to say');
    now += 1_900;
    assert.deepEqual(meter.pace(ship(20 * MiB, 100 * MiB)), { bytesPerSecond: 10 * MiB, etaSeconds: 8 });
  });

  it('counts only data in the time left: an initial sync of a mostly empty disk (figures measured on qemu-nbd)', () => {
    // An 8 GiB qcow2 with 64 MiB of data at 0, 4 GiB and its end, the rest never written: planned as
    // 192 MiB of data and 8000 MiB of zero ranges. Measured on this machine: the sender read, packed
    // and framed the data in 383 ms and the zero ranges in 23 ms in all (a frame header per 2 GiB);
    // the DR side wrote 4 GiB of zeroes in 20 ms, 64 MiB of data in 372 ms. Here the data goes over
    // a link at 100 MiB/s.
    const total = 8192 * MiB;
    const zeroTotal = 8000 * MiB;
    const at = (dataDone: number, zeroDone: number): Progress => ({ ...ship(dataDone + zeroDone, total), zeroes: { done: zeroDone, total: zeroTotal } });
    let now = 0;
    const meter = new PaceMeter(() => now);
    meter.pace(at(4 * MiB, 0));
    now = 600; // the first 64 MiB of data shipped; the 4 GiB zero range after it is next
    const first = meter.pace(at(64 * MiB, 0));
    assert.equal(first.bytesPerSecond, 100 * MiB);
    assert.equal(first.etaSeconds, 1.28, '128 MiB of data left at 100 MiB/s');
    // What was really left: 128 MiB of data and 7.9 GiB of zeroes, about 1.32 s. Counting the zeroes
    // as bytes to ship said (8192 - 64) MiB / 100 MiB/s = 81 s.
    const really = 1.28 + 0.023 + 0.04;
    assert.ok(first.etaSeconds! > really / 1.5 && first.etaSeconds! < really * 1.5, `${first.etaSeconds} s shown, ${really} s left`);
    now = 1240; // past the zero range and into the second 64 MiB: the rate is still the data's, not 3 GiB/s
    const later = meter.pace(at(128 * MiB, 4032 * MiB));
    assert.equal(later.bytesPerSecond, 100 * MiB);
    assert.equal(later.etaSeconds, 0.64);
    // Under a 10 MB/s limit: 128 MiB of data left is 13.4 s, not (8192 - 64) MiB / limit = 14 min.
    assert.equal(Math.round(secondsLeft({ ...at(64 * MiB, 0), limit: 10e6 }, 0)! * 10) / 10, 13.4);
    assert.equal(secondsLeft(ship(0, 32 * MiB), 0), undefined, 'no data gone yet, no limit: no estimate');
  });

  it('with --json writes one line per event that passes, the shape unchanged, the last one always', () => {
    let now = 0;
    const out = sink(false);
    const r = progressReporter({ json: true, out, now: () => now });
    r.onProgress({ phase: 'prepare', unit: 'steps', done: 0, total: 1, subject: web });
    r.onProgress({ phase: 'prepare', unit: 'steps', done: 1, total: 1, subject: web });
    for (let i = 0; i <= 1000; i++) {
      now = i; // a thousand events in one second
      r.onProgress(ship(i * 1000, 1_000_000));
    }
    r.stop();
    const lines = jsonLines<ProgressEvent>(out.text);
    assert.ok(lines.length <= 2 + 6, `throttled: ${lines.length} lines`);
    assert.deepEqual(lines[0], { event: 'progress', phase: 'prepare', unit: 'steps', done: 0, total: 1, subject: web });
    assertProgress(lines, ['prepare', 'ship']);
  });

  it('on a terminal redraws one bar in place, keeps steps and ended bars as lines; nothing on a pipe', () => {
    let now = 0;
    const tty = sink(true);
    const r = progressReporter({ json: false, out: tty, now: () => now });
    r.onProgress({ phase: 'prepare', unit: 'steps', done: 1, total: 1, subject: web });
    r.onProgress(ship(0, 10 * MiB));
    now = 1_000;
    r.onProgress(ship(5 * MiB, 10 * MiB));
    now = 2_000;
    r.onProgress(ship(10 * MiB, 10 * MiB));
    r.stop();
    const screen = tty.text.split('\n').map((l) => l.split('\r\x1b[K').pop());
    assert.deepEqual(screen, ['web prepare 1/1', 'web ship [########################] 100% 10.0 MiB/10.0 MiB 5.0 MiB/s', '']);
    assert.match(tty.text, /\[############------------\]  50% 5\.0 MiB\/10\.0 MiB 5\.0 MiB\/s ETA 1s/);

    const pipe = sink(false);
    const quiet = progressReporter({ json: false, out: pipe });
    quiet.onProgress(ship(1));
    quiet.stop();
    assert.equal(pipe.text, '');

    // The failover's timeline has its own step lines: only bars then.
    const bars = sink(true);
    const only = progressReporter({ json: false, out: bars, steps: false });
    only.onProgress({ phase: 'boot', unit: 'steps', done: 1, total: 1, subject: web });
    assert.equal(bars.text, '');
  });

  it('the daemon logs steps, not bytes', () => {
    const said: { event: Record<string, unknown>; text: string }[] = [];
    const log = stepLog((event, text) => said.push({ event, text }));
    log(ship(1));
    log({ phase: 'merge', unit: 'steps', done: 1, total: 1, subject: { protection: 'web', point: 'rp-4' } });
    assert.deepEqual(said, [{ event: { event: 'progress', phase: 'merge', unit: 'steps', done: 1, total: 1, subject: { protection: 'web', point: 'rp-4' } }, text: 'web rp-4 merge 1/1' }]);
  });
});
