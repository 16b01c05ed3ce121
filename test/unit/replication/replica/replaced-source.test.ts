/**
 * A protection moved onto another source VM (`vmdr protect --replace-source`): the identity
 * record on the DR site, and the old machine's points kept by retention, on real qcow2 chains and
 * the real state file, until the operator releases them.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { migrations } from '../../../../plugin/state/migrations.js';
import { releaseKept } from '../../../../plugin/protections/source-record.js';
import { recordedSource, recordSource } from '../../../../plugin/state/sources.js';
import { StateStore } from '../../../../plugin/state/store.js';
import { rejectsWith } from '../../../helpers/assertions.js';
import { KiB, MiB, makeLab, reads, writePattern, type Lab } from './helpers.js';

const OLD = '11111111-1111-4111-8111-111111111111';
const NEW = '22222222-2222-4222-8222-222222222222';

describe('replica store: points of a replaced source VM', function () {
  this.timeout(60_000);
  let lab: Lab;
  beforeEach(async () => {
    lab = await makeLab();
  });
  afterEach(async () => {
    await lab.cleanup();
  });

  /** Point n writes its own pattern at n MiB of vda. */
  async function point(n: number): Promise<void> {
    const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 8 * MiB }]);
    await writePattern(pending.overlays[0]!.image, 0x30 + n, n * MiB, 64 * KiB);
    await pending.commit({ time: new Date(Date.now() - (10 - n) * 60_000), checkpoint: `c${n}`, since: null, kind: 'full', bytesShipped: 1, dataBytes: 1, zeroBytes: 0 });
  }
  const kept = () => lab.replicas.listPoints('web').map((p) => [p.id, p.replacedSource]);

  it('records the first identity, keeps it against another one, and says when it is the same VM renamed', () => {
    const db = lab.state.db;
    assert.equal(recordSource(db, 'web', { uuid: OLD, name: 'web' }).outcome, 'recorded');
    assert.equal(recordSource(db, 'web', { uuid: OLD, name: 'web-renamed' }).outcome, 'unchanged');
    assert.equal(recordedSource(db, 'web')?.vmName, 'web-renamed');
    const conflict = recordSource(db, 'web', { uuid: NEW, name: 'web' });
    assert.equal(conflict.outcome, 'conflict');
    assert.equal(recordedSource(db, 'web')?.vmUuid, OLD, 'a conflict changes nothing');
    assert.equal(recordedSource(db, 'other'), undefined);
  });

  it('replacing keeps every existing point for the old VM: retention merges none until they are released', async () => {
    for (const n of [1, 2, 3]) await point(n);
    recordSource(lab.state.db, 'web', { uuid: OLD, name: 'web' });
    const r = recordSource(lab.state.db, 'web', { uuid: NEW, name: 'web' }, { replace: true });
    assert.equal(r.outcome, 'replaced');
    assert.deepEqual(r.outcome === 'replaced' && r.kept, [1, 2, 3]);
    assert.equal(recordedSource(lab.state.db, 'web')?.vmUuid, NEW);
    await point(4); // the new VM's first point
    await point(5);
    assert.deepEqual(kept(), [['rp-1', OLD], ['rp-2', OLD], ['rp-3', OLD], ['rp-4', null], ['rp-5', null]]);

    const blocked = await lab.replicas.applyRetention('web', { keep: 1 });
    assert.deepEqual(blocked.dropped, []);
    assert.match(blocked.skipped ?? '', /rp-1, rp-2, rp-3, rp-4 not merged: rp-1, rp-2, rp-3 are pinned/);
    const old = lab.replicas.getPoint('web', 'rp-2').disks[0]!.image;
    assert.ok(await reads(old, 0x32, 2 * MiB, 64 * KiB), 'the old machine\'s point still reads its data');

    // Released one by one: a point that is not kept is left out of the answer, an unknown one is an error.
    assert.deepEqual(releaseKept(lab.replicas, 'web', ['rp-3', 'rp-4']), ['rp-3']);
    await rejectsWith(Promise.resolve().then(() => releaseKept(lab.replicas, 'web', ['rp-9'])), 'RECOVERY_POINT_NOT_FOUND');
    await rejectsWith(Promise.resolve().then(() => releaseKept(lab.replicas, 'web', ['nonsense'])), 'RECOVERY_POINT_NOT_FOUND');
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, []);

    assert.deepEqual(releaseKept(lab.replicas, 'web', 'replaced'), ['rp-1', 'rp-2']);
    assert.deepEqual(releaseKept(lab.replicas, 'web', 'replaced'), [], 'twice is harmless');
    assert.deepEqual((await lab.replicas.applyRetention('web', { keep: 1 })).dropped, ['rp-1', 'rp-2', 'rp-3', 'rp-4']);
    const [left] = lab.replicas.listPoints('web');
    assert.equal(left!.id, 'rp-5');
    // Merged down, the newest point holds what every point wrote.
    for (const n of [1, 2, 3, 4, 5]) assert.ok(await reads(left!.disks[0]!.image, 0x30 + n, n * MiB, 64 * KiB), `rp-5 reads point ${n}'s data`);
  });

  it('a second replacement keeps the points of the VM in between too, each marked with its own VM', async () => {
    await point(1);
    recordSource(lab.state.db, 'web', { uuid: OLD, name: 'web' });
    recordSource(lab.state.db, 'web', { uuid: NEW, name: 'web' }, { replace: true });
    await point(2);
    const third = '33333333-3333-4333-8333-333333333333';
    const r = recordSource(lab.state.db, 'web', { uuid: third, name: 'web' }, { replace: true });
    assert.deepEqual(r.outcome === 'replaced' && r.kept, [2]);
    assert.deepEqual(kept(), [['rp-1', OLD], ['rp-2', NEW]]);
  });

  it('migrates a state file of schema 2 with points: they belong to no replaced VM', () => {
    const path = join(lab.root, 'old.db');
    const raw = new Database(path);
    raw.exec(migrations[0]!);
    raw.exec(migrations[1]!);
    raw.pragma('user_version = 2');
    raw.prepare(
      `INSERT INTO recovery_points (protection, seq, time_ms, committed_at_ms, checkpoint, kind, bytes_shipped, data_bytes, zero_bytes) VALUES ('web', 1, 1, 1, 'c1', 'full', 0, 0, 0)`,
    ).run();
    raw.close();
    const store = StateStore.open(path);
    try {
      assert.equal(store.schemaVersion, migrations.length);
      assert.equal(recordedSource(store.db, 'web'), undefined);
      const r = recordSource(store.db, 'web', { uuid: NEW, name: 'web' }, { replace: true });
      assert.deepEqual(r.outcome === 'replaced' && r.kept, [1], 'replacing an unrecorded source keeps its points too');
      assert.equal((store.db.prepare('SELECT replaced_source FROM recovery_points').get() as { replaced_source: string }).replaced_source, 'unrecorded');
    } finally {
      store.close();
    }
  });
});
