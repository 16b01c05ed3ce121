/**
 * A recovery point being received: one new overlay per disk, invisible to everyone until commit
 * records it (and releases the lease) in one transaction.
 */
import { rmdir } from 'node:fs/promises';
import { basename } from 'node:path';
import { holdsLease, releaseLease } from '../../state/leases.js';
import { insertPoint, latestSeq, type PointRow } from '../../state/points.js';
import type { StateStore } from '../../state/store.js';
import { OverlayMissing, PendingPointClosed, ReplicaLeaseLost } from './errors.js';
import { removeFile, syncFile } from './images.js';
import type { ReplicaLease } from './lease.js';
import type { PendingPoint, RecoveryPoint } from './store.js';

type CommitMeta = Parameters<PendingPoint['commit']>[0];

/** Files and directories beginPoint made for one point; dirs deepest first. */
export interface MadeForPoint {
  overlays: string[];
  bases: string[];
  dirs: string[];
}

/** Removes what a point that was never committed made; a directory something else put a file in stays. */
export async function removeMade(made: MadeForPoint): Promise<void> {
  for (const file of [...made.overlays, ...made.bases]) await removeFile(file);
  for (const dir of made.dirs) {
    await rmdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' && err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
    });
  }
}

export class PendingReplicaPoint implements PendingPoint {
  private status: 'open' | 'committed' | 'discarded' = 'open';

  constructor(
    private readonly state: StateStore,
    private readonly lease: ReplicaLease,
    readonly protection: string,
    readonly seq: number,
    readonly overlays: { disk: string; image: string; sizeBytes: number }[],
    private readonly toPoint: (row: PointRow) => RecoveryPoint,
    private readonly made: MadeForPoint = { overlays: overlays.map((o) => o.image), bases: [], dirs: [] },
  ) {}

  async commit(meta: CommitMeta): Promise<RecoveryPoint> {
    if (this.status !== 'open') throw new PendingPointClosed(this.protection, this.seq, this.status);
    for (const o of this.overlays) {
      try {
        await syncFile(o.image);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new OverlayMissing(this.protection, o.image, err);
        throw err;
      }
    }
    const row: PointRow = {
      protection: this.protection,
      seq: this.seq,
      timeMs: meta.time.getTime(),
      committedAtMs: Date.now(),
      checkpoint: meta.checkpoint,
      since: meta.since,
      kind: meta.kind,
      bytesShipped: meta.bytesShipped,
      dataBytes: meta.dataBytes,
      zeroBytes: meta.zeroBytes,
      pinned: false,
      ...meta.consistency,
      disks: this.overlays.map((o) => ({ disk: o.disk, image: basename(o.image), sizeBytes: o.sizeBytes })),
    };
    const db = this.state.db;
    db.transaction(() => {
      if (!holdsLease(db, this.protection, this.lease.holder) || latestSeq(db, this.protection) >= this.seq) {
        throw new ReplicaLeaseLost(this.protection, this.seq);
      }
      insertPoint(db, row);
      releaseLease(db, this.protection, this.lease.holder);
    }).immediate();
    this.status = 'committed';
    this.lease.release();
    return this.toPoint(row);
  }

  async discard(): Promise<void> {
    if (this.status !== 'open') return;
    // Without the lease the overlay names may already belong to another writer: leave them to recover().
    if (this.lease.held) await removeMade(this.made);
    this.status = 'discarded';
    this.lease.release();
  }
}
