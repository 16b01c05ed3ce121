import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { rejectsWith } from '../../../helpers/assertions.js';
import type { PendingPoint } from '../../../../plugin/replication/replica/store.js';
import { ReplicaStore } from '../../../../plugin/replication/replica/store.js';
import { KiB, MiB, killOn, makeLab, reads, runChild, virtualSize, writePattern, type Lab } from './helpers.js';

const meta = (n: number, kind: 'full' | 'incremental' = n === 1 ? 'full' : 'incremental') => ({
  time: new Date(Date.UTC(2026, 10, 25, 10, n)),
  checkpoint: `vmdr-${n}`,
  since: n === 1 ? null : `vmdr-${n - 1}`,
  kind,
  bytesShipped: 1000 * n,
  dataBytes: 64 * KiB,
  zeroBytes: 0,
});

describe('replica store: recovery points', function () {
  this.timeout(60_000);
  let lab: Lab;
  beforeEach(async () => {
    lab = await makeLab();
  });
  afterEach(async () => {
    await lab.cleanup();
  });

  async function point(n: number, pattern: number, offset: number, disks = [{ name: 'vda', sizeBytes: 16 * MiB }]): Promise<void> {
    const pending = await lab.replicas.beginPoint('web', disks);
    for (const o of pending.overlays) await writePattern(o.image, pattern, offset, 64 * KiB);
    await pending.commit(meta(n));
  }

  it('commits points on a chain; each point reads its own state', async () => {
    const first = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
    assert.equal(first.seq, 1);
    assert.equal(first.overlays[0]!.image, join(lab.storage, 'web', 'vda', 'point-1.qcow2'));
    assert.ok(existsSync(join(lab.storage, 'web', 'vda', 'base.qcow2')), 'a missing base is created');
    assert.deepEqual(lab.replicas.listPoints('web'), [], 'a pending point is not a recovery point');
    await writePattern(first.overlays[0]!.image, 0x11, 0, 64 * KiB);
    const rp1 = await first.commit(meta(1));
    assert.equal(rp1.id, 'rp-1');
    assert.equal(rp1.kind, 'full');
    assert.equal(rp1.since, null);
    assert.equal(rp1.checkpoint, 'vmdr-1');
    assert.deepEqual(rp1.time, meta(1).time);
    assert.equal(rp1.pinned, false);

    await point(2, 0x22, 0);
    await point(3, 0x33, 1 * MiB);

    const points = lab.replicas.listPoints('web');
    assert.deepEqual(points.map((p) => p.id), ['rp-1', 'rp-2', 'rp-3']);
    const [p1, p2, p3] = points.map((p) => p.disks[0]!.image);
    assert.ok(await reads(p1!, 0x11, 0, 64 * KiB), 'rp-1 still reads the old pattern where rp-2 overwrote');
    assert.ok(await reads(p2!, 0x22, 0, 64 * KiB));
    assert.ok(await reads(p2!, 0, 1 * MiB, 64 * KiB));
    assert.ok(await reads(p3!, 0x22, 0, 64 * KiB));
    assert.ok(await reads(p3!, 0x33, 1 * MiB, 64 * KiB));
    assert.equal(lab.replicas.latestPoint('web')!.id, 'rp-3');
    assert.equal(lab.replicas.getPoint('web', 'rp-2').checkpoint, 'vmdr-2');
    const err = await rejectsWith(Promise.resolve().then(() => lab.replicas.getPoint('web', 'rp-9')), 'RECOVERY_POINT_NOT_FOUND');
    assert.deepEqual([err.subject['protection'], err.subject.point], ['web', 'rp-9']);
    assert.equal(lab.replicas.latestPoint('db'), undefined);
  });

  it('keeps backing file names relative, so a replica directory can move', async () => {
    await point(1, 0x11, 0);
    await point(2, 0x22, 0);
    const { execFileSync } = await import('node:child_process');
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', join(lab.storage, 'web', 'vda', 'point-2.qcow2')], { encoding: 'utf8' }));
    assert.equal(info['backing-filename'], 'point-1.qcow2');
    const { rename } = await import('node:fs/promises');
    await rename(lab.storage, `${lab.storage}-moved`);
    assert.ok(await reads(join(`${lab.storage}-moved`, 'web', 'vda', 'point-2.qcow2'), 0x22, 0, 64 * KiB));
    const moved = new ReplicaStore(`${lab.storage}-moved`, lab.state);
    assert.ok(await reads(moved.latestPoint('web')!.disks[0]!.image, 0x22, 0, 64 * KiB));
  });

  it('discards a pending point: overlays gone, replica at its last point, safe twice', async () => {
    await point(1, 0x11, 0);
    const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
    await writePattern(pending.overlays[0]!.image, 0x99, 0, 64 * KiB);
    await pending.discard();
    await pending.discard();
    assert.equal(existsSync(pending.overlays[0]!.image), false);
    assert.deepEqual(lab.replicas.listPoints('web').map((p) => p.id), ['rp-1']);
    await rejectsWith(pending.commit(meta(2)), 'PENDING_POINT_CLOSED');
    const next = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
    assert.equal(next.seq, 2, 'the lease was released');
    assert.ok(await reads(next.overlays[0]!.image, 0x11, 0, 64 * KiB), 'the new overlay sits on rp-1');
    await next.discard();
  });

  it('refuses a second pending point with REPLICA_BUSY, and a discard after a failed commit is safe', async () => {
    const a = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
    await rejectsWith(lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]), 'REPLICA_BUSY');
    await rejectsWith(lab.replicas.applyRetention('web', { keep: 1 }), 'REPLICA_BUSY');
    const other = await lab.replicas.beginPoint('db', [{ name: 'vda', sizeBytes: 1 * MiB }]);
    await other.discard();
    const { rm } = await import('node:fs/promises');
    await rm(a.overlays[0]!.image);
    await rejectsWith(a.commit(meta(1)), 'OVERLAY_MISSING');
    await a.discard();
    await a.discard();
    assert.deepEqual(lab.replicas.listPoints('web'), []);
    await (await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }])).discard();
  });

  it('a lease held by another live process blocks; once that process is killed it does not', async () => {
    await point(1, 0x11, 0);
    let checks: Promise<void> | undefined;
    const child = await runChild(
      { action: 'begin', storage: lab.storage, statePath: lab.statePath, protection: 'web', disks: [{ name: 'vda', sizeBytes: 16 * MiB }] },
      {
        onLine: (line, kill) => {
          if (line !== 'written') return;
          checks = (async () => {
            await rejectsWith(lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]), 'REPLICA_BUSY');
            const recovered = await lab.replicas.recover('web');
            assert.deepEqual(recovered, { discarded: [], mergesFinished: [], busy: ['web'] }, 'recover leaves a live writer alone');
          })().finally(kill);
        },
      },
    );
    await checks;
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    const next = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
    assert.equal(next.seq, 2);
    assert.ok(await reads(next.overlays[0]!.image, 0x11, 0, 64 * KiB), 'the dead writer\'s overlay was replaced');
    await next.discard();
  });

  it('after a writer is kill -9ed before commit, recover() deletes its overlay and the replica stays at its last point', async () => {
    await point(1, 0x11, 0, [
      { name: 'vda', sizeBytes: 16 * MiB },
      { name: 'vdb', sizeBytes: 4 * MiB },
    ]);
    const child = await runChild(
      {
        action: 'begin',
        storage: lab.storage,
        statePath: lab.statePath,
        protection: 'web',
        disks: [
          { name: 'vda', sizeBytes: 16 * MiB },
          { name: 'vdb', sizeBytes: 4 * MiB },
        ],
      },
      { onLine: killOn('written') },
    );
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    const left = JSON.parse(child.stdout.split('\n')[0]!) as string[];
    assert.ok(left.every((f) => existsSync(f)));
    // Foreign files and base images are never touched.
    await writeFile(join(dirname(left[0]!), 'notes.txt'), 'mine');

    const result = await lab.replicas.recover();
    assert.deepEqual(result.discarded.sort(), [...left].sort());
    assert.deepEqual(result.busy, []);
    assert.ok(left.every((f) => !existsSync(f)));
    assert.deepEqual((await readdir(dirname(left[0]!))).sort(), ['base.qcow2', 'notes.txt', 'point-1.qcow2']);
    assert.deepEqual(lab.replicas.listPoints('web').map((p) => p.id), ['rp-1']);
    assert.ok(await reads(lab.replicas.latestPoint('web')!.disks[0]!.image, 0x11, 0, 64 * KiB));

    // The dead writer's lease does not block the next cycle.
    const next = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
    assert.equal(next.seq, 2);
    await next.discard();
    assert.deepEqual(await lab.replicas.recover(), { discarded: [], mergesFinished: [], busy: [] });
  });

  it('a dead holder on another host blocks only until its lease expires', async () => {
    lab.state.db
      .prepare('INSERT INTO replica_leases (protection, holder, host, pid, purpose, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?)')
      .run('web', 'receive:x', 'some-other-host', 1, 'receive', Date.now() + 400);
    await rejectsWith(lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 1 * MiB }]), 'REPLICA_BUSY');
    await new Promise((r) => setTimeout(r, 500));
    const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 1 * MiB }]);
    await pending.commit(meta(1));
  });

  it('a pending point that lost its lease does not commit', async () => {
    const short = new ReplicaStore(lab.storage, lab.state, { leaseTtlMs: 1000 });
    const pending: PendingPoint = await short.beginPoint('web', [{ name: 'vda', sizeBytes: 1 * MiB }]);
    lab.state.db.prepare('UPDATE replica_leases SET expires_at_ms = 0').run();
    await rejectsWith(pending.commit(meta(1)), 'REPLICA_LEASE_LOST');
    await pending.discard();
    assert.deepEqual(lab.replicas.listPoints('web'), []);
    assert.ok(existsSync(pending.overlays[0]!.image), 'without the lease the overlay is left to recover()');
    assert.equal((await lab.replicas.recover('web')).discarded.length, 1);
  });

  it('a disk that grows between points, and a second disk added to the VM', async () => {
    await point(1, 0x11, 0);
    await point(2, 0x22, 20 * MiB, [{ name: 'vda', sizeBytes: 32 * MiB }]);
    const p2 = lab.replicas.getPoint('web', 'rp-2');
    assert.equal(p2.disks[0]!.sizeBytes, 32 * MiB);
    assert.equal(await virtualSize(p2.disks[0]!.image), 32 * MiB);
    assert.ok(await reads(p2.disks[0]!.image, 0x11, 0, 64 * KiB));
    assert.ok(await reads(p2.disks[0]!.image, 0x22, 20 * MiB, 64 * KiB));
    assert.equal(await virtualSize(lab.replicas.getPoint('web', 'rp-1').disks[0]!.image), 16 * MiB);

    const pending = await lab.replicas.beginPoint('web', [
      { name: 'vda', sizeBytes: 32 * MiB },
      { name: 'vdb', sizeBytes: 8 * MiB },
    ]);
    assert.deepEqual(pending.overlays.map((o) => o.disk), ['vda', 'vdb']);
    assert.ok(await reads(pending.overlays[1]!.image, 0, 0, 8 * MiB), 'an added disk starts from an empty base');
    await writePattern(pending.overlays[1]!.image, 0x44, 0, 64 * KiB);
    const p3 = await pending.commit(meta(3));
    assert.deepEqual(p3.disks.map((d) => [d.disk, d.sizeBytes]), [['vda', 32 * MiB], ['vdb', 8 * MiB]]);
    assert.ok(await reads(p3.disks[0]!.image, 0x22, 20 * MiB, 64 * KiB));
    assert.ok(await reads(p3.disks[1]!.image, 0x44, 0, 64 * KiB));
    // A disk the newest point lacked begins a chain of its own, named after the point it began at.
    assert.equal(basename(p3.disks[1]!.image), 'point-3.g3.qcow2');
    assert.ok(existsSync(join(lab.storage, 'web', 'vdb', 'base.g3.qcow2')));
  });

  it('pins and unpins points; unknown points are refused', async () => {
    await point(1, 0x11, 0);
    lab.replicas.pinPoint('web', 'rp-1');
    assert.equal(lab.replicas.getPoint('web', 'rp-1').pinned, true);
    lab.replicas.unpinPoint('web', 'rp-1');
    assert.equal(lab.replicas.getPoint('web', 'rp-1').pinned, false);
    await rejectsWith(Promise.resolve().then(() => lab.replicas.pinPoint('web', 'rp-7')), 'RECOVERY_POINT_NOT_FOUND');
    await rejectsWith(Promise.resolve().then(() => lab.replicas.pinPoint('web', 'nonsense')), 'RECOVERY_POINT_NOT_FOUND');
  });

  it('refuses names that would leave the storage directory', async () => {
    await rejectsWith(lab.replicas.beginPoint('../etc', [{ name: 'vda', sizeBytes: MiB }]), 'INVALID_REPLICA_NAME');
    await rejectsWith(lab.replicas.beginPoint('web', [{ name: 'a/b', sizeBytes: MiB }]), 'INVALID_REPLICA_NAME');
  });
});
