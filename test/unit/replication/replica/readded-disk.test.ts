import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { KiB, MiB, killOn, labTemplates, makeLab, reads, runChild, writePattern, type Lab, snapshotAll, assertListedPointsIntact } from './helpers.js';

const exec = promisify(execFile);
const MIN = 60_000;
const HOUR = 60 * MIN;
const T0 = Date.UTC(2026, 10, 25, 0, 0);
/** Hours 0 and 1 keep rp-1 and rp-2; hour 2 keeps rp-5 only: rp-3 (no vdc) and rp-4 (the new vdc's first) go in one run. */
const TIMES = [50, 110, 130, 140, 160].map((m) => T0 + m * MIN);
const NOW = new Date(TIMES[4]! + 30_000);
const TIERS = { all: MIN, hourly: 24 * HOUR };

/**
 * vdc is detached after rp-2 and attached again (the same target name, other bytes) from rp-4: the
 * second vdc begins a chain of its own, so a merge of the first one's points into base never shows
 * through it, and the first one's points never read what the second wrote.
 */
describe('replica store: a disk removed and added again', function () {
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

  /** Point n: vda always; vdc of 4 MiB on rp-1..2 (patterns 0xa_), none on rp-3, 8 MiB of other bytes on rp-4..5 (0xb_). */
  async function point(n: number, times = TIMES, into = lab): Promise<void> {
    const vdc = n <= 2 ? [{ name: 'vdc', sizeBytes: 4 * MiB }] : n >= 4 ? [{ name: 'vdc', sizeBytes: 8 * MiB }] : [];
    const pending = await into.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 8 * MiB }, ...vdc]);
    const [vda, c] = pending.overlays;
    await writePattern(vda!.image, 0x10 + n, n * 512 * KiB, 64 * KiB);
    if (c && n <= 2) {
      await writePattern(c.image, 0xa0 + n, 0, 64 * KiB); // each writes the start
      await writePattern(c.image, 0xa0 + n, n * MiB, 64 * KiB);
    }
    // The second vdc never writes the start: whatever it reads there must be its own zeros.
    if (c && n >= 4) await writePattern(c.image, 0xb0 + n, n * MiB, 64 * KiB);
    await pending.commit({ time: new Date(times[n - 1]!), checkpoint: `vmdr-${n}`, since: null, kind: 'incremental', bytesShipped: 1, dataBytes: 1, zeroBytes: 0 });
  }

  /** This test's lab holds rp-1..rp-5 as point() makes them (made once per file, copied): their raw copies. */
  async function fivePoints(): Promise<Map<string, string>> {
    const copy = await templates.copy('five', async (into) => {
      for (let n = 1; n <= 5; n++) await point(n, TIMES, into);
    });
    await lab.cleanup();
    lab = copy.lab;
    return copy.snaps;
  }

  const ids = () => lab.replicas.listPoints('web').map((p) => p.id);
  const files = async (disk: string) => (await readdir(join(lab.storage, 'web', disk))).sort();
  const image = (id: string, disk: string) => lab.replicas.getPoint('web', id).disks.find((d) => d.disk === disk)!.image;



  /** What each cycle wrote to vdc, and nothing of the other vdc. */
  async function assertVdcAsWritten(): Promise<void> {
    const listed = new Set(ids());
    if (listed.has('rp-1')) assert.ok(await reads(image('rp-1', 'vdc'), 0xa1, 0, 64 * KiB));
    if (listed.has('rp-2')) {
      assert.ok(await reads(image('rp-2', 'vdc'), 0xa2, 0, 64 * KiB));
      assert.ok(await reads(image('rp-2', 'vdc'), 0xa1, 1 * MiB, 64 * KiB));
      assert.ok(await reads(image('rp-2', 'vdc'), 0, 4 * MiB - 64 * KiB, 64 * KiB));
    }
    for (const id of ['rp-4', 'rp-5', 'rp-6'].filter((x) => listed.has(x))) {
      const c = image(id, 'vdc');
      assert.ok(await reads(c, 0, 0, 4 * MiB), `${id}'s vdc reads zeros where only the first vdc wrote`);
      assert.ok(await reads(c, 0xb4, 4 * MiB, 64 * KiB), `${id}'s vdc reads rp-4's write`);
      if (id !== 'rp-4') assert.ok(await reads(c, 0xb5, 5 * MiB, 64 * KiB), `${id}'s vdc reads rp-5's write`);
    }
  }

  it('the new vdc begins its own chain; every merge into base, of either chain, leaves every point reading its own bytes', async () => {
    const snaps = await fivePoints();
    assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2', 'point-1.qcow2', 'point-2.qcow2', 'point-4.g4.qcow2', 'point-5.g4.qcow2']);
    await assertVdcAsWritten();
    // rp-1 into base.qcow2 (the first vdc's base), then rp-2, rp-3 (no vdc: the first vdc's files go), rp-4 into base.g4.
    for (const [keep, dropped] of [[4, ['rp-1']], [3, ['rp-2']], [2, ['rp-3']]] as const) {
      assert.deepEqual((await lab.replicas.applyRetention('web', { keep })).dropped, dropped);
      await assertListedPointsIntact(lab, snaps);
      await assertVdcAsWritten();
    }
    assert.equal(basename(image('rp-4', 'vdc')), 'base.g4.qcow2');
    assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2', 'point-5.g4.qcow2']);
    // The next point goes on the new chain.
    const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 8 * MiB }, { name: 'vdc', sizeBytes: 8 * MiB }]);
    assert.equal(basename(pending.overlays[1]!.image), 'point-6.g4.qcow2');
    await pending.commit({ time: new Date(TIMES[4]! + MIN), checkpoint: 'vmdr-6', since: 'vmdr-5', kind: 'incremental', bytesShipped: 1, dataBytes: 1, zeroBytes: 0 });
    await assertVdcAsWritten();
    for (const [key, raw] of await snapshotAll(lab)) if (!snaps.has(key)) snaps.set(key, raw);
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, ['rp-4', 'rp-5']);
    await assertListedPointsIntact(lab, snaps);
    await assertVdcAsWritten();
    assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2']);
  });

  it('a middle merge that drops the gap and the new chain\'s first point, then a merge into base across both chains', async () => {
    const snaps = await fivePoints();
    assert.deepEqual(await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW), { dropped: ['rp-3', 'rp-4'] });
    assert.deepEqual(ids(), ['rp-1', 'rp-2', 'rp-5']);
    await assertListedPointsIntact(lab, snaps);
    await assertVdcAsWritten();
    // rp-2 and rp-5 are now next to each other, of two chains: rp-5's vdc went onto its own base.
    assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2', 'point-1.qcow2', 'point-2.qcow2', 'point-5.g4.qcow2']);
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, ['rp-1', 'rp-2']);
    await assertListedPointsIntact(lab, snaps);
    await assertVdcAsWritten();
    assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2']);
    assert.equal(basename(image('rp-5', 'vdc')), 'base.g4.qcow2');
    assert.equal(basename(image('rp-5', 'vda')), 'base.qcow2');
  });

  it('a point begun with the new vdc and never committed leaves neither its overlays nor its new base', async () => {
    for (let n = 1; n <= 3; n++) await point(n);
    const child = await runChild(
      { action: 'begin', storage: lab.storage, statePath: lab.statePath, protection: 'web', disks: [{ name: 'vda', sizeBytes: 8 * MiB }, { name: 'vdc', sizeBytes: 8 * MiB }] },
      { onLine: killOn('written') },
    );
    assert.equal(child.signal, 'SIGKILL');
    assert.ok(existsSync(join(lab.storage, 'web', 'vdc', 'base.g4.qcow2')));
    const { discarded } = await lab.replicas.recover();
    assert.deepEqual(discarded.map((f) => basename(f)).sort(), ['base.g4.qcow2', 'point-4.g4.qcow2', 'point-4.qcow2']);
    assert.deepEqual(await files('vdc'), ['base.qcow2', 'point-1.qcow2', 'point-2.qcow2']);
  });

  it('a point a failback adopted on the new vdc (its files name no chain) is taken as of that chain through both kinds of merge', async () => {
    // rp-5 is the DR VM's overlays (failover-t.qcow2), as a failback adopts them; rp-6 in the next hour.
    const times = [...TIMES, T0 + 185 * MIN];
    for (let n = 1; n <= 4; n++) await point(n, times);
    const files4 = lab.replicas.getPoint('web', 'rp-4').disks;
    for (const d of files4) {
      await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', basename(d.image), '-F', 'qcow2', 'failover-t.qcow2', String(d.sizeBytes)], { cwd: dirname(d.image) });
    }
    const adopted = (disk: string) => join(lab.storage, 'web', disk, 'failover-t.qcow2');
    await writePattern(adopted('vda'), 0x15, 5 * 512 * KiB, 64 * KiB);
    await writePattern(adopted('vdc'), 0xb5, 5 * MiB, 64 * KiB);
    lab.replicas.adoptPoint('web', [{ disk: 'vda', file: 'failover-t.qcow2' }, { disk: 'vdc', file: 'failover-t.qcow2' }], { time: new Date(times[4]!), checkpoint: 'vmdr-5' });
    await point(6, times);
    const snaps = await snapshotAll(lab);
    await assertVdcAsWritten();
    // rp-3 and rp-4 go: rp-5's vdc (adopted) is rebased onto the new vdc's base, next to rp-2 of the first.
    assert.deepEqual(await lab.replicas.applyRetention('web', { tiers: TIERS }, new Date(times[5]! + 30_000)), { dropped: ['rp-3', 'rp-4'] });
    assert.deepEqual(ids(), ['rp-1', 'rp-2', 'rp-5', 'rp-6']);
    await assertListedPointsIntact(lab, snaps);
    await assertVdcAsWritten();
    assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2', 'failover-t.qcow2', 'point-1.qcow2', 'point-2.qcow2', 'point-6.g4.qcow2']);
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, ['rp-1', 'rp-2', 'rp-5']);
    await assertListedPointsIntact(lab, snaps);
    await assertVdcAsWritten();
    assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2']);
  });

  /** kill -9 inside the middle merge (tiers) or inside the merge into base after it (keep: 1). */
  const kills: [string, 'tiers' | 'keep'][] = [
    ['merge-after-intent', 'tiers'],
    ['middle-after-rebase', 'tiers'], // vda
    ['middle-after-rebase@2', 'tiers'], // vdc: rp-5 onto base.g4
    ['middle-after-remove@3', 'tiers'], // vdc's point-4.g4
    ['middle-after-record', 'tiers'],
    ['merge-after-commit@3', 'keep'], // vda's rp-5 into base.qcow2, then vdc's
    ['merge-after-commit@4', 'keep'],
    ['merge-after-record', 'keep'],
  ];
  for (const [fp, policy] of kills) {
    it(`kill -9 at ${fp} (${policy}): every listed point reads right, recover() finishes it`, async () => {
      const snaps = await fivePoints();
      if (policy === 'keep') await lab.replicas.applyRetention('web', { tiers: TIERS }, NOW);
      const child = await runChild(
        { action: 'retention', storage: lab.storage, statePath: lab.statePath, protection: 'web', ...(policy === 'tiers' ? { tiers: TIERS, nowMs: NOW.getTime() } : { keep: 1 }) },
        { env: { VMDR_FAILPOINT: fp } },
      );
      assert.equal(child.signal, 'SIGKILL', `the failpoint was not reached: ${child.stdout}${child.stderr}`);
      await assertListedPointsIntact(lab, snaps);
      await assertVdcAsWritten();
      assert.deepEqual((await lab.replicas.recover()).busy, []);
      await assertListedPointsIntact(lab, snaps);
      await lab.replicas.applyRetention('web', { keep: 1 });
      assert.deepEqual(ids(), ['rp-5']);
      await assertListedPointsIntact(lab, snaps);
      await assertVdcAsWritten();
      assert.deepEqual(await files('vdc'), ['base.g4.qcow2', 'base.qcow2']);
    });
  }
});
