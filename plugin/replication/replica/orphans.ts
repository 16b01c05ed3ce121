/**
 * Deletes overlays of a protection that no committed point and no unfinished merge refers to:
 * pending points that were never committed, overlays left after a merge, overlays made ahead
 * for a next point (but those in `keep`, absolute paths), and the base of a chain no point is of
 * any more (base.qcow2 stays: the pre-staged target VM is defined on it). Caller holds the lease.
 */
import { join } from 'node:path';
import { mergeFiles, pendingMerge } from '../../state/merges.js';
import { pointRows } from '../../state/points.js';
import type { StateStore } from '../../state/store.js';
import { protectionDir, type ReplicaOwner } from '../layout.js';
import { chainBase, chainBasesIn, chainOfName, chainsOf, overlayFilesIn, subdirectories } from './files.js';
import { removeFile } from './images.js';

export async function deleteOrphans(storage: string, state: StateStore, owner: ReplicaOwner, keep: ReadonlySet<string> = new Set()): Promise<string[]> {
  const protection = owner.name;
  const top = protectionDir(storage, owner);
  const referenced = new Set<string>();
  const points = pointRows(state.db, protection);
  for (const point of points) for (const d of point.disks) referenced.add(join(d.disk, d.image));
  // The base of every chain a listed point is of, or a merge still needs.
  for (const disk of new Set(points.flatMap((p) => p.disks.map((d) => d.disk)))) {
    for (const chain of chainsOf(points, disk)) if (chain !== undefined) referenced.add(join(disk, chainBase(chain)));
  }
  const merge = pendingMerge(state.db, protection);
  for (const f of merge ? mergeFiles(merge) : []) {
    referenced.add(join(f.disk, f.file));
    const chain = chainOfName(f.file);
    if (chain !== undefined) referenced.add(join(f.disk, chainBase(chain)));
  }
  // An overlay a failback adopted names no chain; the list may not tell which base it reads, nor
  // may a merge's plan of such overlays: no chain base goes while either is there.
  const basesGo = !merge && points.every((p) => p.disks.every((d) => chainOfName(d.image) !== undefined));
  const deleted: string[] = [];
  for (const disk of await subdirectories(top)) {
    for (const file of [...(await overlayFilesIn(join(top, disk))), ...(basesGo ? await chainBasesIn(join(top, disk)) : [])]) {
      const path = join(top, disk, file);
      if (referenced.has(join(disk, file)) || keep.has(path)) continue;
      if (await removeFile(path)) deleted.push(path);
    }
  }
  return deleted;
}
