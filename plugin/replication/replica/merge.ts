/**
 * Retention merges. Into base: the oldest kept point ends up held by its chain's base (base.qcow2,
 * or base.gN.qcow2 for a disk that began a chain of its own, files.ts), the points under it go. Up (middle): a run of points between two kept ones goes, its data moving up into the
 * kept point above where that point does not already have its own.
 *
 * The journal row is written, in the same transaction that removes the dropped points from the
 * list, before any file changes: no listed point ever reads through a file whose bytes change.
 * Then per disk, for each overlay of the plan oldest first: commit it into base (base now holds
 * its content, the overlay still shadows it, so every chain above reads the same), point the next
 * overlay at base, delete it. The last overlay (the kept point's own) is deleted only after the DB
 * says base holds that point. Every step is repeatable, so `finishMerge` after a crash at any
 * instant simply runs again from the first overlay of the plan that still exists.
 *
 * A middle merge is journaled the same way (its dropped points leave the list with the journal
 * row). Per disk, the kept overlay above is rebased in qemu-img's safe mode onto the kept image
 * below: qemu-img first copies into it every cluster the old chain reads differently from the new
 * one, then switches its backing file, so it reads the same at every instant, and a rebase cut
 * short repeats from the start. Only then are the dropped overlays deleted. `qemu-img commit` of a
 * dropped overlay into the point below would be wrong: that point stays, and its bytes would change.
 * The point below is only read. Neither runs on a chain a VM runs on (retention.ts keeps those).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VmdrError } from '../../../hypervisors/errors.js';
import type { Progress } from '../../../hypervisors/types.js';
import { deleteMerge, insertMerge, pendingMerge, type MergeRow, type MiddleMergeDisk } from '../../state/merges.js';
import { deletePoints, deletePointsBefore, pointRows, setDiskImage, type PointRow } from '../../state/points.js';
import type { StateStore } from '../../state/store.js';
import { diskDir, type ReplicaOwner } from '../layout.js';
import { failpoint } from './failpoints.js';
import { chainBase, chainOfName, chainsOf, isChainBase } from './files.js';
import { imageInfo } from '../qemu-img.js';
import { commitIntoBacking, rebaseKeepingContent, removeFile, setBacking, shrinkTo } from './images.js';

/** The replica chain is not what the merge journal expects; nothing further was changed. */
export class MergeChainUnexpected extends VmdrError {
  constructor(protection: string, file: string, detail: string) {
    super('MERGE_CHAIN_UNEXPECTED', `retention merge of protection "${protection}" stopped at ${file}: ${detail}`, {
      subject: { protection, file },
      userError: false,
      remedy: 'inspect the chain with `qemu-img info --backing-chain`; the listed points were not touched',
    });
  }
}

/** Per disk of `target`, its overlays from the bottom of its chain up to the target's own. */
export function mergePlan(points: PointRow[], target: PointRow): Record<string, string[]> {
  const plan: Record<string, string[]> = {};
  const at = points.indexOf(target);
  for (const { disk } of target.disks) {
    const files: string[] = [];
    // Only the target's own chain: an earlier one of the disk (removed, re-added) has its own base.
    const chains = chainsOf(points, disk);
    for (let i = at; i >= 0 && chains[i] === chains[at]; i--) {
      const image = points[i]!.disks.find((x) => x.disk === disk)!.image;
      if (!isChainBase(image)) files.unshift(image);
    }
    if (files.length > 0) plan[disk] = files;
  }
  return plan;
}

/**
 * Records the intent: the journal says what to merge and the points under `target` leave the list.
 * Call inside the transaction that chose `target`, so no pin can slip in between.
 */
export function startMerge(state: StateStore, points: PointRow[], target: PointRow): void {
  insertMerge(state.db, { protection: target.protection, kind: 'base', targetSeq: target.seq, plan: mergePlan(points, target), startedAtMs: Date.now() });
  deletePointsBefore(state.db, target.protection, target.seq);
}

/**
 * Per disk, what dropping the run `drop` (between the kept `below` and `above`, adjacent in
 * `points`) does to the files: where `above`'s image of the disk reads through the run's (same
 * chain), it is rebased onto `below`'s image, or onto its chain's base when `below` is not of
 * that chain (the chain began inside the run).
 */
export function middlePlan(points: PointRow[], run: { drop: PointRow[]; below: PointRow; above: PointRow }): MiddleMergeDisk[] {
  const disks = new Set([...run.drop, run.above].flatMap((p) => p.disks.map((d) => d.disk)));
  return [...disks].map((disk) => {
    const image = (p: PointRow) => p.disks.find((d) => d.disk === disk)?.image;
    const chains = chainsOf(points, disk);
    const chain = (p: PointRow) => chains[points.indexOf(p)];
    const plan: MiddleMergeDisk = { disk, drop: run.drop.map(image).filter((f): f is string => f !== undefined && !isChainBase(f)) };
    const top = image(run.above);
    const last = run.drop.at(-1)!;
    // Chains are unbroken runs of points: the run's last point is of above's chain or none of it is.
    if (top === undefined || chain(last) !== chain(run.above)) return plan;
    const onto = chain(run.below) === chain(run.above) ? image(run.below)! : chainBase(chain(run.above)!);
    return { ...plan, top, from: image(last)!, onto };
  });
}

/** Records a middle merge's intent: the journal row, and the run's points leave the list. Inside the transaction that chose it. */
export function startMiddleMerge(state: StateStore, points: PointRow[], run: { drop: PointRow[]; below: PointRow; above: PointRow }): void {
  const protection = run.above.protection;
  insertMerge(state.db, { protection, kind: 'middle', targetSeq: run.above.seq, disks: middlePlan(points, run), startedAtMs: Date.now() });
  deletePoints(state.db, protection, run.drop.map((p) => p.seq));
}

/** Finishes the protection's journaled merge, if any; returns the id of the point now held by base. */
export async function finishMerge(storage: string, state: StateStore, owner: ReplicaOwner, onProgress?: (progress: Progress) => void): Promise<string | undefined> {
  const merge = pendingMerge(state.db, owner.name);
  if (!merge) return undefined;
  return merge.kind === 'base' ? finishBaseMerge(storage, state, owner, merge, onProgress) : finishMiddleMerge(storage, state, owner, merge, onProgress);
}

async function finishBaseMerge(
  storage: string,
  state: StateStore,
  owner: ReplicaOwner,
  merge: Extract<MergeRow, { kind: 'base' }>,
  onProgress?: (progress: Progress) => void,
): Promise<string> {
  const protection = owner.name;
  // Counted in overlays committed into base: each is one qemu-img commit, the merge's unit of work.
  const point = `rp-${merge.targetSeq}`;
  const total = Object.values(merge.plan).reduce((sum, files) => sum + files.length, 0);
  let done = 0;
  const report = (disk?: string) => onProgress?.({ phase: 'merge', unit: 'steps', done, total, subject: { protection, point }, ...(disk ? { detail: `disk ${disk}` } : {}) });
  report();
  const bases: Record<string, string> = {};
  for (const [disk, files] of Object.entries(merge.plan)) {
    const dir = diskDir(storage, owner, disk);
    const found = files.findIndex((f) => existsSync(join(dir, f)));
    // None left: all merged and deleted, only the DB record was missing.
    const first = found < 0 ? files.length : found;
    const baseName = (bases[disk] = await baseOfPlan(dir, files, first));
    const base = join(dir, baseName);
    done += first;
    for (let j = first; j < files.length; j++) {
      const overlay = join(dir, files[j]!);
      const backing = (await imageInfo(overlay)).backingFile;
      if (backing !== baseName) throw new MergeChainUnexpected(protection, overlay, `its backing file is ${backing ?? 'none'}, expected ${baseName}`);
      await commitIntoBacking(overlay);
      failpoint('merge-after-commit');
      // Base keeps its size when the disk shrank; the point it now holds must not read past its end.
      const size = (await imageInfo(overlay)).virtualSize;
      if ((await imageInfo(base)).virtualSize > size) await shrinkTo(base, size);
      const next = j + 1 < files.length ? files[j + 1] : await overlayAbove(state, dir, protection, merge.targetSeq, disk, files[j]!);
      if (next && j + 1 < files.length) {
        // Repointed without copying: right only for the overlay that reads through this one (or already through base).
        const above = (await imageInfo(join(dir, next))).backingFile;
        if (above !== files[j] && above !== baseName) throw new MergeChainUnexpected(protection, join(dir, next), `its backing file is ${above ?? 'none'}, expected ${files[j]} or ${baseName}`);
      }
      if (next) {
        await setBacking(join(dir, next), baseName);
        failpoint('merge-after-rebase');
      }
      if (j + 1 < files.length) {
        await removeFile(overlay);
        failpoint('merge-after-remove');
      }
      done += 1;
      report(disk);
    }
  }
  state.db
    .transaction(() => {
      for (const disk of Object.keys(merge.plan)) setDiskImage(state.db, protection, merge.targetSeq, disk, bases[disk]!);
      deleteMerge(state.db, protection);
    })
    .immediate();
  failpoint('merge-after-record');
  for (const [disk, files] of Object.entries(merge.plan)) await removeFile(join(diskDir(storage, owner, disk), files[files.length - 1]!));
  return point;
}

/**
 * The base a plan's chain merges into: the one its file names say, else (adopted overlays only)
 * the backing file of its first overlay still there.
 */
async function baseOfPlan(dir: string, files: string[], first: number): Promise<string> {
  const named = files.map(chainOfName).find((c) => c !== undefined);
  if (named !== undefined) return chainBase(named);
  const backing = first < files.length ? (await imageInfo(join(dir, files[first]!))).backingFile : undefined;
  return backing !== undefined && isChainBase(backing) ? backing : chainBase(0);
}

/**
 * Finishes a middle merge: per disk, the kept overlay above rebased onto the kept image below (a
 * step that repeats safely until its backing file says it is done), then the dropped overlays
 * deleted. Returns the id of the point the dropped ones were merged into.
 */
async function finishMiddleMerge(
  storage: string,
  state: StateStore,
  owner: ReplicaOwner,
  merge: Extract<MergeRow, { kind: 'middle' }>,
  onProgress?: (progress: Progress) => void,
): Promise<string> {
  const protection = owner.name;
  const point = `rp-${merge.targetSeq}`;
  let done = 0;
  const total = merge.disks.length;
  const report = (disk?: string) => onProgress?.({ phase: 'merge', unit: 'steps', done, total, subject: { protection, point }, ...(disk ? { detail: `disk ${disk}` } : {}) });
  report();
  for (const d of merge.disks) {
    const dir = diskDir(storage, owner, d.disk);
    if (d.top && d.onto) {
      const top = join(dir, d.top);
      const backing = (await imageInfo(top)).backingFile;
      if (backing !== d.onto) {
        if (backing !== d.from) throw new MergeChainUnexpected(protection, top, `its backing file is ${backing ?? 'none'}, expected ${d.from} or ${d.onto}`);
        if (!existsSync(join(dir, d.onto))) throw new MergeChainUnexpected(protection, top, `${d.onto}, the image it is to be rebased onto, is missing`);
        await rebaseKeepingContent(top, d.onto);
        failpoint('middle-after-rebase');
      }
    } else if (d.drop.length > 0) {
      // Not rebased: the kept point above is of another chain of the disk (or lacks it), so it must not read through the run.
      const above = pointRows(state.db, protection).find((p) => p.seq === merge.targetSeq)?.disks.find((x) => x.disk === d.disk)?.image;
      const backing = above === undefined || isChainBase(above) ? undefined : (await imageInfo(join(dir, above))).backingFile;
      if (backing !== undefined && d.drop.includes(backing)) throw new MergeChainUnexpected(protection, join(dir, above!), `it reads through ${backing}, a dropped point's overlay`);
    }
    for (const file of d.drop) {
      if (await removeFile(join(dir, file))) failpoint('middle-after-remove');
    }
    done += 1;
    report(d.disk);
  }
  deleteMerge(state.db, protection);
  failpoint('middle-after-record');
  return point;
}

/**
 * The overlay just above the target in this disk's chain: the next committed point's image of the
 * disk, when it reads through `top` (the target's own overlay) or already through base. A next
 * point of another chain of the disk is left as it is.
 */
async function overlayAbove(state: StateStore, dir: string, protection: string, targetSeq: number, disk: string, top: string): Promise<string | undefined> {
  const next = pointRows(state.db, protection).find((p) => p.seq > targetSeq);
  const image = next?.disks.find((x) => x.disk === disk)?.image;
  if (image === undefined || isChainBase(image)) return undefined;
  return (await imageInfo(join(dir, image))).backingFile === top ? image : undefined;
}
