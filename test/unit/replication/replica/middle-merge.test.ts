import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Progress } from '../../../../hypervisors/types.js';
import { serveImage } from '../../../../plugin/replication/replica/qemu-nbd.js';
import { createQcow2 } from '../../../../plugin/replication/replica/images.js';
import { rejectsWith } from '../../../helpers/assertions.js';
import { KiB, MiB, labTemplates, makeLab, reads, runChild, sameContent, writePattern, type Lab, snapshotAll, assertListedPointsIntact } from './helpers.js';

const exec = promisify(execFile);
const MIN = 60_000;
const HOUR = 60 * MIN;
const T0 = Date.UTC(2026, 10, 25, 0, 0);
/** rp-1 is hour 0's newest, rp-4 hour 1's, rp-6 the newest: rp-2, rp-3 and rp-5 go, from the middle. */
const TIMES = [30, 70, 80, 110, 130, 140].map((m) => T0 + m * MIN);
const NOW = new Date(TIMES[5]! + 30_000);
const TIERS = { all: MIN, hourly: 24 * HOUR };

describe('replica store: middle merges (time tiers)', function () {
  this.timeout(180_000);
  let lab: Lab;
  const templates = labTemplates();
  beforeEach(async () => {
    lab = await makeLab();
  });
  afterEach(async () => {
    await lab.cleanup();
  });
  after(async () => {
    await templates.cleanup();
  });

  /** Point n (1-based) at TIMES[n-1]; vda grows at point 3; vdb is on every point but the 5th. */
  async function point(n: number, into = lab): Promise<void> {
    const disks = [{ name: 'vda', sizeBytes: n >= 3 ? 24 * MiB : 16 * MiB }, ...(n === 5 ? [] : [{ name: 'vdb', sizeBytes: 4 * MiB }])];
    const pending = await into.replicas.beginPoint('web', disks);
    const [vda, vdb] = pending.overlays;
    await writePattern(vda!.image, 0x10 + n, 0, 64 * KiB); // every point overwrites the start
    await writePattern(vda!.image, 0x10 + n, n * MiB, 128 * KiB); // and leaves its own mark
    if (n >= 3) await writePattern(vda!.image, 0x10 + n, 20 * MiB, 64 * KiB); // past the old end
    if (vdb) await writePattern(vdb.image, 0x20 + n, (n % 2) * 64 * KiB, 64 * KiB);
    await pending.commit({ time: new Date(TIMES[n - 1]!), checkpoint: `vmdr-${n}`, since: null, kind: 'incremental', bytesShipped: 1, dataBytes: 1, zeroBytes: 0 });
  }

  /** This test's lab holds rp-1..rp-6 as point() makes them (made once per file, copied): their raw copies. */
  async function sixPoints(): Promise<Map<string, string>> {
    const copy = await templates.copy('six', async (into) => {
      for (let n = 1; n <= 6; n++) await point(n, into);
    });
    await lab.cleanup();
    lab = copy.lab;
    return copy.snaps;
  }



  const files = async (disk: string) => (await readdir(join(lab.storage, 'web', disk))).sort();
  const ids = () => lab.replicas.listPoints('web').map((p) => p.id);
  const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

  it('merges each run of dropped points up into the kept point above; every kept point reads the same', async () => {
    const snaps = await sixPoints();
    const below = await sha(join(lab.storage, 'web', 'vda', 'point-1.qcow2'));
    const progress: Progress[] = [];
    const result = await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW, { onProgress: (p) => progress.push(p) });
    assert.deepEqual(result, { dropped: ['rp-2', 'rp-3', 'rp-5'] });
    assert.deepEqual(ids(), ['rp-1', 'rp-4', 'rp-6']);
    await assertListedPointsIntact(lab, snaps);
    assert.equal(await sha(join(lab.storage, 'web', 'vda', 'point-1.qcow2')), below, 'the kept point below is only read');
    assert.deepEqual(await files('vda'), ['base.qcow2', 'point-1.qcow2', 'point-4.qcow2', 'point-6.qcow2']);
    assert.deepEqual(await files('vdb'), ['base.g6.qcow2', 'base.qcow2', 'point-1.qcow2', 'point-4.qcow2', 'point-6.g6.qcow2']);
    // vdb's chain was broken at rp-5 (the VM had no vdb then): rp-6's vdb began a chain of its own.
    const backing = async (disk: string, file: string) =>
      (JSON.parse((await exec('qemu-img', ['info', '--output=json', '-U', join(lab.storage, 'web', disk, file)])).stdout) as { 'backing-filename'?: string })['backing-filename'];
    assert.equal(await backing('vda', 'point-4.qcow2'), 'point-1.qcow2');
    assert.equal(await backing('vda', 'point-6.qcow2'), 'point-4.qcow2');
    assert.equal(await backing('vdb', 'point-6.g6.qcow2'), 'base.g6.qcow2');
    assert.deepEqual([...new Set(progress.map((p) => `${p.phase} ${p.subject?.point}`))], ['merge rp-4', 'merge rp-6']);
    // Nothing more to drop; a merge into base then goes through the merged chain as before.
    assert.deepEqual(await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW), { dropped: [] });
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, ['rp-1', 'rp-4']);
    // vdb too: rp-6's vdb is a chain of its own, which the merge of vdb's first chain into base.qcow2 does not touch.
    for (const d of lab.replicas.getPoint('web', 'rp-6').disks) assert.ok(await sameContent(d.image, snaps.get(`rp-6/${d.disk}`)!), `rp-6/${d.disk}`);
    assert.deepEqual(await files('vdb'), ['base.g6.qcow2', 'base.qcow2']);
    assert.ok(await reads(lab.replicas.getPoint('web', 'rp-6').disks[0]!.image, 0x14, 4 * MiB, 128 * KiB), "rp-4's mark is still under rp-6");
  });

  it('never writes a pinned point or anything under it: only runs above the pin go', async () => {
    const snaps = await sixPoints();
    lab.replicas.pinPoint('web', 'rp-3');
    const under = await Promise.all(['point-1.qcow2', 'point-2.qcow2', 'point-3.qcow2'].map((f) => sha(join(lab.storage, 'web', 'vda', f))));
    const result = await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW);
    assert.deepEqual(result, { dropped: ['rp-5'], skipped: 'rp-2 kept: under pinned rp-3' });
    assert.deepEqual(ids(), ['rp-1', 'rp-2', 'rp-3', 'rp-4', 'rp-6']);
    await assertListedPointsIntact(lab, snaps);
    assert.deepEqual(await Promise.all(['point-1.qcow2', 'point-2.qcow2', 'point-3.qcow2'].map((f) => sha(join(lab.storage, 'web', 'vda', f)))), under);
    // A pin on the kept point above a run holds the run too (rewriting it would write under the pin).
    lab.replicas.unpinPoint('web', 'rp-3');
    lab.replicas.pinPoint('web', 'rp-4');
    assert.deepEqual(await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW), { dropped: [], skipped: 'rp-2, rp-3 kept: under pinned rp-4' });
    lab.replicas.unpinPoint('web', 'rp-4');
    assert.deepEqual((await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW)).dropped, ['rp-2', 'rp-3']);
    await assertListedPointsIntact(lab, snaps);
  });

  it('a VM booted on a pinned point keeps reading it while the run above merges onto it', async () => {
    const snaps = await sixPoints();
    lab.replicas.pinPoint('web', 'rp-4');
    // As a drill boots: a writable overlay on the point, its chain opened (and locked) as QEMU opens it.
    const dir = join(lab.storage, 'web', 'vda');
    await createQcow2(join(dir, 'drill-1.qcow2'), 24 * MiB, 'point-4.qcow2');
    const vm = await serveImage(join(dir, 'drill-1.qcow2'));
    try {
      const uri = `nbd+unix:///?socket=${vm.listen.socket}`;
      const seen = async () => exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, snaps.get('rp-4/vda')!]).then(() => true, () => false);
      assert.ok(await seen(), 'the VM reads rp-4');
      // rp-5 goes: rp-6 is rebased onto rp-4's image, which the VM has open.
      assert.deepEqual((await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW)).dropped, ['rp-5']);
      assert.ok(await seen(), 'the VM still reads rp-4, byte for byte');
    } finally {
      await vm.stop();
    }
    await assertListedPointsIntact(lab, snaps);
  });

  it('stops beginning merges past its time budget; the next run goes on', async () => {
    const snaps = await sixPoints();
    assert.deepEqual(await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW, { budgetMs: 0 }), { dropped: ['rp-2', 'rp-3'], more: true });
    // `more` only when something is left: this run took the last.
    assert.deepEqual(await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW, { budgetMs: 0 }), { dropped: ['rp-5'] });
    assert.deepEqual(await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW, { budgetMs: 0 }), { dropped: [] });
    await assertListedPointsIntact(lab, snaps);
  });

  /** Where a kill -9 lands, and the list the first merge's intent (or the second's) left. */
  const failpoints: [string, string[]][] = [
    ['merge-after-intent', ['rp-1', 'rp-4', 'rp-5', 'rp-6']],
    ['middle-after-rebase', ['rp-1', 'rp-4', 'rp-5', 'rp-6']], // vda of the first run rebased
    ['middle-after-remove', ['rp-1', 'rp-4', 'rp-5', 'rp-6']], // one of its overlays deleted
    ['middle-after-rebase@2', ['rp-1', 'rp-4', 'rp-5', 'rp-6']], // vdb too
    ['middle-after-record', ['rp-1', 'rp-4', 'rp-5', 'rp-6']], // the first merge recorded done
    ['merge-after-intent@2', ['rp-1', 'rp-4', 'rp-6']],
    ['middle-after-rebase@3', ['rp-1', 'rp-4', 'rp-6']], // the second run's vda
    ['middle-after-remove@5', ['rp-1', 'rp-4', 'rp-6']], // its overlay of vda (rp-5 had no vdb)
  ];
  for (const [fp, listed] of failpoints) {
    it(`kill -9 at ${fp}: every listed point reads right, recover() and the next run finish it`, async () => {
      const snaps = await sixPoints();
      const child = await runChild(
        { action: 'retention', storage: lab.storage, statePath: lab.statePath, protection: 'web', tiers: TIERS, nowMs: NOW.getTime() },
        { env: { VMDR_FAILPOINT: fp } },
      );
      assert.equal(child.signal, 'SIGKILL', `the failpoint was not reached: ${child.stdout}${child.stderr}`);
      assert.deepEqual(ids(), listed, 'dropped points left the list first');
      await assertListedPointsIntact(lab, snaps);
      if (fp !== 'middle-after-record') await rejectsWith(Promise.resolve().then(() => lab.replicas.pinPoint('web', 'rp-4')), 'REPLICA_BUSY');

      const recovered = await lab.replicas.recover();
      assert.deepEqual(recovered.busy, []);
      await assertListedPointsIntact(lab, snaps);
      await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW);
      assert.deepEqual(ids(), ['rp-1', 'rp-4', 'rp-6']);
      await assertListedPointsIntact(lab, snaps);
      assert.deepEqual(await files('vda'), ['base.qcow2', 'point-1.qcow2', 'point-4.qcow2', 'point-6.qcow2']);
      assert.deepEqual(await files('vdb'), ['base.g6.qcow2', 'base.qcow2', 'point-1.qcow2', 'point-4.qcow2', 'point-6.g6.qcow2']);
      assert.deepEqual(await lab.replicas.recover(), { discarded: [], mergesFinished: [], busy: [] });
    });
  }

  it('kill -9 of qemu-img in the middle of a rebase: the merge repeats it and every point reads the same', async () => {
    // rp-2 (dropped) holds 48 MiB that rp-3 (kept above) does not: the rebase copies them up.
    const disk = [{ name: 'vda', sizeBytes: 64 * MiB }];
    for (const [n, fill] of [[1, 0], [2, 48 * MiB], [3, 0]] as const) {
      const pending = await lab.replicas.beginPoint('web', disk);
      if (fill) await writePattern(pending.overlays[0]!.image, 0x60 + n, 0, fill);
      await writePattern(pending.overlays[0]!.image, 0x70 + n, 60 * MiB, 64 * KiB);
      await pending.commit({ time: new Date(TIMES[[0, 1, 3][n - 1]!]!), checkpoint: `c${n}`, since: null, kind: 'incremental', bytesShipped: 1, dataBytes: 1, zeroBytes: 0 });
    }
    const snaps = await snapshotAll(lab);
    // The merge stops itself right after its intent; the rebase is then run by hand and killed part way.
    const child = await runChild(
      { action: 'retention', storage: lab.storage, statePath: lab.statePath, protection: 'web', tiers: TIERS, nowMs: TIMES[3]! + 30_000 },
      { env: { VMDR_FAILPOINT: 'merge-after-intent' } },
    );
    assert.equal(child.signal, 'SIGKILL');
    const dir = join(lab.storage, 'web', 'vda');
    // Each write synced (writethrough): the copy takes about 2.5 times as long (136 ms against 52 ms
    // on the lab machine), a wider window for the kill; a loaded machine once let the whole copy
    // finish before it (2026-12-02).
    const rebase = spawn('qemu-img', ['rebase', '-t', 'writethrough', '-f', 'qcow2', '-b', 'point-1.qcow2', '-F', 'qcow2', 'point-3.qcow2'], { cwd: dir, stdio: 'ignore' });
    const top = join(dir, 'point-3.qcow2');
    const before = statSync(top).size;
    // Killed once it has copied something up, well before it is done. The wait spins on stat, not
    // on timers: on a loaded machine a timer's turn came after the whole copy was done.
    const until = Date.now() + 30_000;
    while (statSync(top).size < before + 4 * MiB && Date.now() < until);
    rebase.kill('SIGKILL');
    await new Promise((r) => rebase.once('close', r));
    const info = JSON.parse((await exec('qemu-img', ['info', '--output=json', '-U', join(dir, 'point-3.qcow2')])).stdout) as { 'backing-filename': string };
    assert.equal(info['backing-filename'], 'point-2.qcow2', 'killed before it switched the backing file');
    assert.deepEqual(ids(), ['rp-1', 'rp-3']);
    await assertListedPointsIntact(lab, snaps);
    assert.deepEqual((await lab.replicas.recover()).mergesFinished, ['web/rp-3']);
    await assertListedPointsIntact(lab, snaps);
    assert.deepEqual(await files('vda'), ['base.qcow2', 'point-1.qcow2', 'point-3.qcow2']);
  });

  it('timing: middle merge of a 64 MiB overlay', async () => {
    const disk = [{ name: 'vda', sizeBytes: 128 * MiB }];
    for (const [n, fill] of [[1, 0], [2, 64 * MiB], [3, 0]] as const) {
      const pending = await lab.replicas.beginPoint('web', disk);
      if (fill) await writePattern(pending.overlays[0]!.image, 0x5a, 0, fill);
      else await writePattern(pending.overlays[0]!.image, 0x30 + n, 100 * MiB, 64 * KiB);
      await pending.commit({ time: new Date(TIMES[[0, 1, 3][n - 1]!]!), checkpoint: `c${n}`, since: null, kind: 'incremental', bytesShipped: 1, dataBytes: 1, zeroBytes: 0 });
    }
    const t = process.hrtime.bigint();
    assert.deepEqual((await lab.replicas.applyRetention('web', { tiers: TIERS }, new Date(TIMES[3]! + 30_000))).dropped, ['rp-2']);
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    assert.ok(await reads(lab.replicas.getPoint('web', 'rp-3').disks[0]!.image, 0x5a, 0, 64 * MiB));
    console.log(`      middle merge of a 64 MiB overlay (rp-2 up into rp-3) ${ms.toFixed(1)} ms`);
  });
});
