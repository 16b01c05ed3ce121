import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Progress } from '../../../../hypervisors/types.js';
import { assertProgress, rejectsWith } from '../../../helpers/assertions.js';
import { KiB, MiB, killOn, makeLab, reads, runChild, writePattern, type Lab, snapshotAll, assertListedPointsIntact } from './helpers.js';

const HOUR = 3600_000;
const T0 = Date.UTC(2026, 10, 25, 0, 0);

describe('replica store: retention merges', function () {
  this.timeout(120_000);
  let lab: Lab;
  beforeEach(async () => {
    lab = await makeLab();
  });
  afterEach(async () => {
    await lab.cleanup();
  });

  /** Point n (1-based) taken at T0 + n hours; vda grows at point 3; vdb on every point. */
  async function point(n: number): Promise<void> {
    const disks = [
      { name: 'vda', sizeBytes: n >= 3 ? 24 * MiB : 16 * MiB },
      { name: 'vdb', sizeBytes: 4 * MiB },
    ];
    const pending = await lab.replicas.beginPoint('web', disks);
    const [vda, vdb] = pending.overlays;
    await writePattern(vda!.image, 0x10 + n, 0, 64 * KiB); // every point overwrites the start
    await writePattern(vda!.image, 0x10 + n, n * MiB, 128 * KiB); // and leaves its own mark
    if (n >= 3) await writePattern(vda!.image, 0x10 + n, 20 * MiB, 64 * KiB); // past the old end
    await writePattern(vdb!.image, 0x20 + n, (n % 2) * 64 * KiB, 64 * KiB);
    await pending.commit({
      time: new Date(T0 + n * HOUR),
      checkpoint: `vmdr-${n}`,
      since: n === 1 ? null : `vmdr-${n - 1}`,
      kind: n === 1 ? 'full' : 'incremental',
      bytesShipped: 1,
      dataBytes: 1,
      zeroBytes: 0,
    });
  }



  async function files(disk: string): Promise<string[]> {
    return (await readdir(join(lab.storage, 'web', disk))).sort();
  }

  it('keeps the last N points younger than maxAge; base ends up holding the oldest kept point, content intact', async () => {
    for (let n = 1; n <= 5; n++) await point(n);
    const snaps = await snapshotAll(lab);
    // keep 3 keeps rp-3..rp-5; maxAge 1.5 h at T0+5h drops rp-3 (2 h old) too.
    const progress: Progress[] = [];
    const result = await lab.replicas.applyRetention('web', { keep: 3, maxAgeMs: 1.5 * HOUR }, new Date(T0 + 5 * HOUR), { onProgress: (p) => progress.push(p) });
    assert.deepEqual(result, { dropped: ['rp-1', 'rp-2', 'rp-3'] });
    // Said in overlays committed into base, about the point base ends up holding.
    assertProgress(progress, ['merge']);
    assert.deepEqual([...new Set(progress.map((p) => `${p.subject?.protection} ${p.subject?.point} ${p.unit}`))], ['web rp-4 steps']);
    assert.deepEqual(progress.map((p) => p.done), [...Array(progress[0]!.total + 1).keys()], `one step per overlay: ${JSON.stringify(progress)}`);
    const points = lab.replicas.listPoints('web');
    assert.deepEqual(points.map((p) => p.id), ['rp-4', 'rp-5']);
    assert.deepEqual(points[0]!.disks.map((d) => d.image), [join(lab.storage, 'web', 'vda', 'base.qcow2'), join(lab.storage, 'web', 'vdb', 'base.qcow2')]);
    await assertListedPointsIntact(lab, snaps);
    assert.deepEqual(await files('vda'), ['base.qcow2', 'point-5.qcow2']);
    assert.deepEqual(await files('vdb'), ['base.qcow2', 'point-5.qcow2']);

    // Again with nothing to drop, then down to the newest alone; seq keeps counting.
    assert.deepEqual(await lab.replicas.applyRetention('web', { keep: 2 }), { dropped: [] });
    assert.deepEqual(await lab.replicas.applyRetention('web', { keep: 1 }), { dropped: ['rp-4'] });
    await assertListedPointsIntact(lab, snaps);
    assert.deepEqual(await files('vda'), ['base.qcow2']);
    await point(6);
    assert.deepEqual(lab.replicas.listPoints('web').map((p) => p.id), ['rp-5', 'rp-6']);
    assert.ok(await reads(lab.replicas.getPoint('web', 'rp-6').disks[0]!.image, 0x15, 5 * MiB, 128 * KiB));
  });

  it('always keeps the newest point, whatever the policy says', async () => {
    for (let n = 1; n <= 3; n++) await point(n);
    const snaps = await snapshotAll(lab);
    const result = await lab.replicas.applyRetention('web', { keep: 0, maxAgeMs: 0 }, new Date(T0 + 100 * HOUR));
    assert.deepEqual(result.dropped, ['rp-1', 'rp-2']);
    assert.deepEqual(lab.replicas.listPoints('web').map((p) => p.id), ['rp-3']);
    await assertListedPointsIntact(lab, snaps);
  });

  it('never merges a pinned point or the points under it, and says so', async () => {
    for (let n = 1; n <= 4; n++) await point(n);
    lab.replicas.pinPoint('web', 'rp-2');
    const result = await lab.replicas.applyRetention('web', { keep: 1 });
    assert.deepEqual(result.dropped, []);
    assert.match(result.skipped ?? '', /rp-1, rp-2, rp-3 not merged: rp-2 is pinned/);
    assert.deepEqual(lab.replicas.listPoints('web').map((p) => p.id), ['rp-1', 'rp-2', 'rp-3', 'rp-4']);
    lab.replicas.unpinPoint('web', 'rp-2');
    lab.replicas.pinPoint('web', 'rp-4');
    assert.match((await lab.replicas.applyRetention('web', { keep: 1 })).skipped ?? '', /rp-4 is pinned/);
    lab.replicas.unpinPoint('web', 'rp-4');
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, ['rp-1', 'rp-2', 'rp-3']);
  });

  const failpoints = [
    'merge-after-intent',
    'merge-after-commit',
    'merge-after-commit@2',
    'merge-after-rebase',
    'merge-after-rebase@2',
    'merge-after-remove',
    'merge-after-commit@4', // second disk
    'merge-after-record',
  ];
  for (const fp of failpoints) {
    it(`a merge kill -9ed at ${fp} is finished by recover(), every listed point reading right throughout`, async () => {
      for (let n = 1; n <= 4; n++) await point(n);
      const snaps = await snapshotAll(lab);
      const child = await runChild(
        { action: 'retention', storage: lab.storage, statePath: lab.statePath, protection: 'web', keep: 2 },
        { env: { VMDR_FAILPOINT: fp } },
      );
      assert.equal(child.signal, 'SIGKILL', `the failpoint was not reached: ${child.stdout}${child.stderr}`);
      assert.deepEqual(lab.replicas.listPoints('web').map((p) => p.id), ['rp-3', 'rp-4'], 'dropped points left the list first');
      await assertListedPointsIntact(lab, snaps);
      if (fp !== 'merge-after-record') await rejectsWith(Promise.resolve().then(() => lab.replicas.pinPoint('web', 'rp-3')), 'REPLICA_BUSY');

      const result = await lab.replicas.recover();
      assert.deepEqual(result.mergesFinished, fp === 'merge-after-record' ? [] : ['web/rp-3']);
      assert.deepEqual(result.busy, []);
      await assertListedPointsIntact(lab, snaps);
      assert.equal(lab.replicas.getPoint('web', 'rp-3').disks[0]!.image, join(lab.storage, 'web', 'vda', 'base.qcow2'));
      assert.deepEqual(await files('vda'), ['base.qcow2', 'point-4.qcow2']);
      assert.deepEqual(await files('vdb'), ['base.qcow2', 'point-4.qcow2']);
      assert.deepEqual(await lab.replicas.recover(), { discarded: [], mergesFinished: [], busy: [] });
    });
  }

  it('a new point begun on top of an interrupted merge of the newest point stays right when the merge finishes', async () => {
    for (let n = 1; n <= 3; n++) await point(n);
    const child = await runChild(
      { action: 'retention', storage: lab.storage, statePath: lab.statePath, protection: 'web', keep: 1 },
      { env: { VMDR_FAILPOINT: 'merge-after-commit@3' } },
    );
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    await point(4);
    const snaps = await snapshotAll(lab);
    assert.deepEqual([...snaps.keys()], ['rp-3/vda', 'rp-3/vdb', 'rp-4/vda', 'rp-4/vdb']);
    const result = await lab.replicas.recover('web');
    assert.deepEqual(result.mergesFinished, ['web/rp-3']);
    await assertListedPointsIntact(lab, snaps);
    assert.deepEqual(await files('vda'), ['base.qcow2', 'point-4.qcow2']);
  });

  it('retention that finds a kill -9ed receiver cleans up after it first', async () => {
    for (let n = 1; n <= 2; n++) await point(n);
    await runChild(
      { action: 'begin', storage: lab.storage, statePath: lab.statePath, protection: 'web', disks: [{ name: 'vda', sizeBytes: 16 * MiB }] },
      { onLine: killOn('written') },
    );
    assert.ok(existsSync(join(lab.storage, 'web', 'vda', 'point-3.qcow2')));
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, ['rp-1']);
    assert.deepEqual(await files('vda'), ['base.qcow2']);
  });

  it('timing: commit and merge of a 64 MiB overlay', async function () {
    await point(1);
    const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 128 * MiB }]);
    await writePattern(pending.overlays[0]!.image, 0x5a, 0, 64 * MiB);
    let t = process.hrtime.bigint();
    await pending.commit({ time: new Date(), checkpoint: 'c', since: null, kind: 'resync', bytesShipped: 64 * MiB, dataBytes: 64 * MiB, zeroBytes: 0 });
    const commitMs = Number(process.hrtime.bigint() - t) / 1e6;
    const pendingTop = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 128 * MiB }]);
    await pendingTop.commit({ time: new Date(), checkpoint: 'd', since: 'c', kind: 'incremental', bytesShipped: 0, dataBytes: 0, zeroBytes: 0 });
    t = process.hrtime.bigint();
    // Drops rp-1 and merges rp-2's 64 MiB overlay into base.
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 2 })).dropped, ['rp-1']);
    const mergeMs = Number(process.hrtime.bigint() - t) / 1e6;
    assert.ok(await reads(lab.replicas.getPoint('web', 'rp-3').disks[0]!.image, 0x5a, 0, 64 * MiB));
    console.log(`      commit ${commitMs.toFixed(1)} ms, merge of a 64 MiB overlay ${mergeMs.toFixed(1)} ms`);
  });
});
