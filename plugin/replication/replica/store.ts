/**
 * The replica store on the DR host: per protected disk a qcow2 chain (base.qcow2, then one
 * point-<seq>.qcow2 overlay per committed cycle; a disk back after a gap begins a chain of its own,
 * files.ts), and the recovery points in the state file.
 * A file is a recovery point only once the state file says so; everything else is debris that
 * `recover()` removes. One writer per protection at a time, through a lease in the state file.
 */
import { existsSync } from 'node:fs';
import { lstat, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { TaskOptions } from '../../../hypervisors/types.js';
import { pendingMerge, protectionsWithMerges } from '../../state/merges.js';
import { protectionsWithLeases } from '../../state/leases.js';
import { insertPoint, latestSeq, pointRows, protectionsWithPoints, setPinned, type PointRow } from '../../state/points.js';
import type { StateStore } from '../../state/store.js';
import type { Config } from '../../config/schema.js';
import { diskDir, protectionDir, replicaOwner, tenantDir, tenantsIn, type ReplicaOwner } from '../layout.js';
import { ProtectionFailedOver, ReplicaBusy, RecoveryPointNotFound } from './errors.js';
import { roleOf } from '../../state/roles.js';
import { allocatedBytes } from '../../tenants/usage.js';
import { makeReplicaDir } from './access.js';
import { failpoint } from './failpoints.js';
import { groupOf } from '../group-points.js';
import { chainBase, chainsOf, nextFileName, pointFileName, subdirectories } from './files.js';
import { createQcow2, removeFile } from './images.js';
import { DEFAULT_LEASE_TTL_MS, ReplicaLease } from './lease.js';
import { finishMerge, startMerge, startMiddleMerge } from './merge.js';
import { checkName, isValidProtectionName } from './names.js';
import type { PointConsistency } from '../consistency.js';
import { deleteOrphans } from './orphans.js';
import { PendingReplicaPoint, removeMade, type MadeForPoint } from './pending.js';
import { retentionCut, type RetentionPolicy } from './retention.js';

export interface RecoveryPointDisk {
  disk: string;
  /** Absolute path of the image that holds this point. */
  image: string;
  sizeBytes: number;
}

/** `consistency`, `consistencyIssue`, `freezeWindowMs`: see consistency.ts. */
export interface RecoveryPoint extends PointConsistency {
  /** 'rp-<seq>', unique within its protection. */
  id: string;
  protection: string;
  seq: number;
  /** The instant the source checkpoint was taken: what the data is the state of. */
  time: Date;
  committedAt: Date;
  checkpoint: string;
  /** The checkpoint this cycle was incremental from; null for full and resync. */
  since: string | null;
  kind: 'full' | 'incremental' | 'resync';
  bytesShipped: number;
  dataBytes: number;
  zeroBytes: number;
  disks: RecoveryPointDisk[];
  pinned: boolean;
  /**
   * The UUID of the replaced source VM this point is of (`vmdr protect --replace-source`): kept
   * by retention until released with `vmdr points --release`. Null for points of the current source.
   */
  replacedSource: string | null;
}

/** What a replica occupies on disk: bytes allocated (what `du` counts), not virtual sizes. */
export interface ReplicaSpace {
  /** Every file of the replica: its points, and the boot overlays of failovers and drills and the overlays made ahead. */
  totalBytes: number;
  /** By point id, its own images (base.qcow2 for the point base holds): what its data takes. */
  byPoint: Record<string, number>;
}

export interface PendingPoint {
  readonly protection: string;
  readonly seq: number;
  /** One new overlay per disk, in the order of `disks` given to beginPoint. */
  readonly overlays: { disk: string; image: string; sizeBytes: number }[];
  commit(meta: {
    time: Date;
    checkpoint: string;
    since: string | null;
    kind: RecoveryPoint['kind'];
    bytesShipped: number;
    dataBytes: number;
    zeroBytes: number;
    /** Absent: crash-consistent. */
    consistency?: PointConsistency;
  }): Promise<RecoveryPoint>;
  /** Removes the overlays; the replica stays at its last committed point. Safe after a failed commit and twice. */
  discard(): Promise<void>;
}

export interface RecoverResult {
  /** Absolute paths of the overlays deleted. */
  discarded: string[];
  /** '<protection>/rp-<seq>' of each merge an interruption left and recover() finished: the point base holds, or the one a middle run was merged into. */
  mergesFinished: string[];
  /** Protections skipped because a live writer holds them. */
  busy: string[];
}

/** Overlays made ahead for a protection's next point, each on the newest point's image of its disk. */
interface NextOverlays {
  seq: number;
  overlays: { disk: string; image: string; sizeBytes: number; backing: string }[];
}

/** How long one retention run may go on beginning merges (applyRetention). */
export const RETENTION_BUDGET_MS = 30_000;

export class ReplicaStore {
  private readonly leaseTtlMs: number;
  /**
   * By protection, what prepareNext made. In this process's memory only: another process, or
   * this one after a restart, sees next-N.qcow2 files as debris that recover() removes.
   */
  private readonly next = new Map<string, NextOverlays>();

  private readonly config: Pick<Config, 'protections'> & Partial<Pick<Config, 'consistencyGroups'>>;

  constructor(
    readonly storage: string,
    readonly state: StateStore,
    /**
     * `config`: its protections say each replica's tenant, and so where a new replica is made
     * (layout.ts). Without it every new replica is made at the storage's top.
     */
    options: { leaseTtlMs?: number; config?: Pick<Config, 'protections'> & Partial<Pick<Config, 'consistencyGroups'>> } = {},
  ) {
    this.leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.config = options.config ?? { protections: [] };
  }

  /**
   * The seq of `protection`'s point of its consistency group's newest group point (every member
   * has a point of that instant, read from the state), which retention keeps; undefined when none.
   */
  private groupPointSeq(protection: string, points: PointRow[]): number | undefined {
    const group = groupOf(this.config.consistencyGroups ?? [], protection);
    if (!group) return undefined;
    const instants = group.protections.map((m) => new Set((m === protection ? points : pointRows(this.state.db, m)).flatMap((p) => (p.groupInstant ? [p.groupInstant] : []))));
    const complete = points.filter((p) => p.groupInstant && instants.every((s) => s.has(p.groupInstant!)));
    return complete.at(-1)?.seq;
  }

  /** Whose replica `protection` is: its directory follows (layout.ts). */
  owner(protection: string): ReplicaOwner {
    return replicaOwner(this.config, protection);
  }

  /** The directory of `protection`'s replica (where it is, or where its first point will make it). */
  protectionDir(protection: string): string {
    return protectionDir(this.storage, this.owner(protection));
  }

  async recover(protection?: string): Promise<RecoverResult> {
    const result: RecoverResult = { discarded: [], mergesFinished: [], busy: [] };
    const names = protection
      ? [protection]
      : [
          ...new Set([
            ...protectionsWithPoints(this.state.db),
            ...protectionsWithMerges(this.state.db),
            ...protectionsWithLeases(this.state.db),
            ...(await subdirectories(this.storage)).filter(isValidProtectionName),
            ...(await Promise.all(tenantsIn(this.storage).map((t) => subdirectories(tenantDir(this.storage, t))))).flat().filter(isValidProtectionName),
          ]),
        ].sort();
    if (protection) checkName('protection', protection);
    for (const name of names) {
      const lease = ReplicaLease.tryAcquire(this.state, name, 'recover', this.leaseTtlMs);
      if (!lease) {
        result.busy.push(name);
        continue;
      }
      try {
        const merged = await finishMerge(this.storage, this.state, this.owner(name));
        if (merged) result.mergesFinished.push(`${name}/${merged}`);
        result.discarded.push(...(await this.deleteOrphans(name)));
      } finally {
        lease.release();
      }
    }
    return result;
  }

  listPoints(protection: string): RecoveryPoint[] {
    const rows = pointRows(this.state.db, protection);
    // One look for the replica's directory, not one per point.
    const dir = rows.length > 0 ? this.protectionDir(protection) : '';
    return rows.map((r) => this.toPoint(r, dir));
  }

  async space(protection: string): Promise<ReplicaSpace> {
    const byPoint: Record<string, number> = {};
    for (const p of this.listPoints(protection)) {
      let bytes = 0;
      for (const d of p.disks) bytes += ((await lstat(d.image).catch(() => undefined))?.blocks ?? 0) * 512;
      byPoint[p.id] = bytes;
    }
    return { totalBytes: await allocatedBytes(this.protectionDir(protection)), byPoint };
  }

  latestPoint(protection: string): RecoveryPoint | undefined {
    return this.listPoints(protection).at(-1);
  }

  getPoint(protection: string, id: string): RecoveryPoint {
    const point = this.listPoints(protection).find((p) => p.id === id);
    if (!point) throw new RecoveryPointNotFound(protection, id);
    return point;
  }

  async beginPoint(protection: string, disks: { name: string; sizeBytes: number }[]): Promise<PendingPoint> {
    checkName('protection', protection);
    for (const d of disks) checkName('disk', d.name);
    if (disks.length === 0 || new Set(disks.map((d) => d.name)).size !== disks.length) {
      throw new RangeError(`beginPoint needs distinct disks, got [${disks.map((d) => d.name).join(', ')}]`);
    }
    const role = roleOf(this.state.db, protection);
    if (role.role === 'failed-over') throw new ProtectionFailedOver(protection, role.failover);
    const lease = ReplicaLease.acquire(this.state, protection, 'receive', this.leaseTtlMs);
    // What this point makes besides its overlays (a new disk's directory and empty base image):
    // a point that is never committed leaves none of it behind.
    const made: MadeForPoint = { overlays: [], bases: [], dirs: [] };
    const ahead = this.next.get(protection);
    try {
      await this.deleteOrphans(protection);
      this.next.delete(protection);
      const rows = pointRows(this.state.db, protection);
      const latest = rows.at(-1);
      const seq = latestSeq(this.state.db, protection) + 1;
      const overlays: PendingPoint['overlays'] = [];
      for (const { name, sizeBytes } of disks) {
        const owner = this.owner(protection);
        const dir = diskDir(this.storage, owner, name);
        for (const d of [...tenantDirs(this.storage, owner), protectionDir(this.storage, owner), dir]) if (!existsSync(d)) made.dirs.unshift(d);
        await makeReplicaDir(this.storage, dir);
        // The newest point's chain of the disk goes on; a disk it lacks (new, or back after a gap)
        // begins a chain of its own on an empty base, which no other point reads.
        const previous = latest?.disks.find((x) => x.disk === name);
        const chain = previous ? chainsOf(rows, name).at(-1)! : latest ? seq : 0;
        const backing = previous?.image ?? chainBase(chain);
        const base = join(dir, chainBase(chain));
        if (!previous && !existsSync(base)) {
          made.bases.push(base);
          await createQcow2(base, sizeBytes);
        }
        const image = join(dir, pointFileName(seq, chain));
        made.overlays.push(image);
        // Made ahead for this very point, on the same backing and size: renamed, not made again.
        const ready = ahead?.seq === seq ? ahead.overlays.find((o) => o.disk === name && o.sizeBytes === sizeBytes && o.backing === backing) : undefined;
        if (ready && existsSync(ready.image)) await rename(ready.image, image);
        else await createQcow2(image, sizeBytes, backing);
        overlays.push({ disk: name, image, sizeBytes });
      }
      // Those made ahead for a disk the stream does not carry, or of another size.
      for (const o of ahead?.overlays ?? []) await removeFile(o.image);
      failpoint('begin-after-create');
      return new PendingReplicaPoint(this.state, lease, protection, seq, overlays, (r) => this.toPoint(r), made);
    } catch (err) {
      await removeMade(made).catch(() => undefined);
      lease.release();
      throw err;
    }
  }

  /**
   * Makes the overlays of the protection's next point ahead, on top of its newest point, so the
   * next cycle starts writing without waiting for qemu-img. They are not a point and become one
   * only through beginPoint (which holds the lease, and takes them only when they are still on
   * the newest point) and commit; a crash leaves them to recover(). No lease is taken: they are
   * files no one else uses, and the replica stays free for other writers. The caller runs it in
   * the protection's turn, as beginPoint.
   */
  async prepareNext(protection: string): Promise<void> {
    const latest = pointRows(this.state.db, protection).at(-1);
    const seq = latestSeq(this.state.db, protection) + 1;
    const previous = this.next.get(protection);
    if (!latest || previous?.seq === seq || roleOf(this.state.db, protection).role === 'failed-over') return;
    this.next.delete(protection);
    for (const o of previous?.overlays ?? []) await removeFile(o.image);
    const overlays: NextOverlays['overlays'] = [];
    try {
      for (const d of latest.disks) {
        const image = join(diskDir(this.storage, this.owner(protection), d.disk), nextFileName(seq));
        overlays.push({ disk: d.disk, image, sizeBytes: d.sizeBytes, backing: d.image });
        await createQcow2(image, d.sizeBytes, d.image);
      }
      failpoint('prepare-after-create');
      this.next.set(protection, { seq, overlays });
    } catch (err) {
      for (const o of overlays) await removeFile(o.image).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Drops what the policy lets go, one journaled merge at a time (into base, or up into a kept
   * point for a run from the middle), each chosen afresh from the list as the last one left it.
   * Past `budgetMs` no further merge begins (`more: true`): the receiver runs retention in the
   * protection's turn, and a replica switched to tiers with thousands of points to drop must not
   * hold its next cycles back; the next commit's run goes on.
   */
  async applyRetention(
    protection: string,
    policy: RetentionPolicy,
    now = new Date(),
    task: Pick<TaskOptions, 'onProgress'> & { budgetMs?: number } = {},
  ): Promise<{ dropped: string[]; skipped?: string; more?: true }> {
    const until = Date.now() + (task.budgetMs ?? RETENTION_BUDGET_MS);
    const lease = ReplicaLease.acquire(this.state, protection, 'retention', this.leaseTtlMs);
    try {
      await finishMerge(this.storage, this.state, this.owner(protection), task.onProgress);
      const db = this.state.db;
      const dropped: string[] = [];
      for (;;) {
        const overBudget = dropped.length > 0 && Date.now() >= until;
        const cut = db
          .transaction(() => {
            const points = pointRows(db, protection);
            const chosen = retentionCut(points, policy, now, this.groupPointSeq(protection, points));
            const middle = chosen.middles[0];
            const drop = chosen.prefix?.drop ?? middle?.drop ?? [];
            // Past the budget only to say whether anything is left: `more` means a next run drops some.
            if (!overBudget && chosen.prefix) startMerge(this.state, points, chosen.prefix.target);
            else if (!overBudget && middle) startMiddleMerge(this.state, points, middle);
            return { drop, skipped: chosen.skipped };
          })
          .immediate();
        if (cut.drop.length === 0) return { dropped, ...(cut.skipped ? { skipped: cut.skipped } : {}) };
        if (overBudget) return { dropped, more: true };
        failpoint('merge-after-intent');
        await finishMerge(this.storage, this.state, this.owner(protection), task.onProgress);
        await this.deleteOrphans(protection);
        dropped.push(...cut.drop.map((p) => `rp-${p.seq}`));
      }
    } finally {
      lease.release();
    }
  }

  /**
   * Makes images that already hold a later state of the protection's disks its newest recovery
   * point: after a failback, the DR VM's overlays on top of the newest point hold exactly what the
   * source now holds, so forward replication goes on from there instead of copying it back again.
   * `files` are names inside each disk's directory, each backed by the newest point's image.
   * `within` runs in the same transaction (the role change that lets replication resume).
   */
  adoptPoint(
    protection: string,
    files: { disk: string; file: string }[],
    meta: { time: Date; checkpoint: string },
    within: () => void = () => undefined,
  ): RecoveryPoint {
    const lease = ReplicaLease.acquire(this.state, protection, 'adopt', this.leaseTtlMs);
    try {
      const db = this.state.db;
      const seq = db
        .transaction(() => {
          const latest = pointRows(db, protection).at(-1);
          if (!latest) throw new RecoveryPointNotFound(protection, 'rp-(any)');
          const disks = latest.disks.map((d) => {
            const adopted = files.find((f) => f.disk === d.disk);
            if (!adopted) throw new RangeError(`adoptPoint: no image for disk ${d.disk} of ${protection}`);
            return { disk: d.disk, image: adopted.file, sizeBytes: d.sizeBytes };
          });
          const next = latestSeq(db, protection) + 1;
          const now = Date.now();
          insertPoint(db, {
            protection,
            seq: next,
            timeMs: meta.time.getTime(),
            committedAtMs: now,
            checkpoint: meta.checkpoint,
            since: latest.checkpoint,
            // Its content was made equal to the source's by comparing blocks, as a resync does.
            kind: 'resync',
            bytesShipped: 0,
            dataBytes: 0,
            zeroBytes: 0,
            pinned: false,
            disks,
          });
          within();
          return next;
        })
        .immediate();
      return this.getPoint(protection, `rp-${seq}`);
    } finally {
      lease.release();
    }
  }

  /** A pinned point (booted by a failover or a drill) and every point under it stay as they are. */
  pinPoint(protection: string, id: string): void {
    this.setPin(protection, id, true);
  }

  unpinPoint(protection: string, id: string): void {
    this.setPin(protection, id, false);
  }

  private setPin(protection: string, id: string, pinned: boolean): void {
    const seq = /^rp-(\d+)$/.exec(id)?.[1];
    const db = this.state.db;
    db.transaction(() => {
      if (pinned && pendingMerge(db, protection)) {
        throw new ReplicaBusy(protection, 'a retention merge is unfinished; pin again after it ends (`recover()` finishes it)');
      }
      if (seq === undefined || !setPinned(db, protection, Number(seq), pinned)) throw new RecoveryPointNotFound(protection, id);
    }).immediate();
  }

  /** Overlays nothing refers to, but those this process made ahead for the next point. */
  private deleteOrphans(protection: string): Promise<string[]> {
    return deleteOrphans(this.storage, this.state, this.owner(protection), new Set(this.next.get(protection)?.overlays.map((o) => o.image)));
  }

  private toPoint(r: PointRow, dir = this.protectionDir(r.protection)): RecoveryPoint {
    return {
      id: `rp-${r.seq}`,
      protection: r.protection,
      seq: r.seq,
      time: new Date(r.timeMs),
      committedAt: new Date(r.committedAtMs),
      checkpoint: r.checkpoint,
      since: r.since,
      kind: r.kind,
      bytesShipped: r.bytesShipped,
      dataBytes: r.dataBytes,
      zeroBytes: r.zeroBytes,
      pinned: r.pinned,
      replacedSource: r.replacedSource ?? null,
      consistency: r.consistency ?? 'crash',
      consistencyIssue: r.consistencyIssue ?? null,
      freezeWindowMs: r.freezeWindowMs ?? null,
      groupInstant: r.groupInstant ?? null,
      disks: r.disks.map((d) => ({ disk: d.disk, image: join(dir, d.disk, d.image), sizeBytes: d.sizeBytes })),
    };
  }
}

/** The tenants' directory and the tenant's own, when the replica is made under them. */
function tenantDirs(storage: string, owner: ReplicaOwner): string[] {
  if (owner.tenant === undefined || !protectionDir(storage, owner).startsWith(tenantDir(storage, owner.tenant))) return [];
  return [dirname(tenantDir(storage, owner.tenant)), tenantDir(storage, owner.tenant)];
}
