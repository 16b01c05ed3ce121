/**
 * Deletes overlays of a protection that no committed point and no unfinished merge refers to:
 * pending points that were never committed, overlays left after a merge, and overlays made ahead
 * for a next point (but those in `keep`, absolute paths). Caller holds the lease.
 */
import { join } from 'node:path';
import { mergeFiles, pendingMerge } from '../../state/merges.js';
import { pointRows } from '../../state/points.js';
import type { StateStore } from '../../state/store.js';
import { protectionDir, type ReplicaOwner } from '../layout.js';
import { overlayFilesIn, subdirectories } from './files.js';
import { removeFile } from './images.js';

export async function deleteOrphans(storage: string, state: StateStore, owner: ReplicaOwner, keep: ReadonlySet<string> = new Set()): Promise<string[]> {
  const protection = owner.name;
  const top = protectionDir(storage, owner);
  const referenced = new Set<string>();
  for (const point of pointRows(state.db, protection)) for (const d of point.disks) referenced.add(join(d.disk, d.image));
  const merge = pendingMerge(state.db, protection);
  for (const f of merge ? mergeFiles(merge) : []) referenced.add(join(f.disk, f.file));
  const deleted: string[] = [];
  for (const disk of await subdirectories(top)) {
    for (const file of await overlayFilesIn(join(top, disk))) {
      const path = join(top, disk, file);
      if (referenced.has(join(disk, file)) || keep.has(path)) continue;
      if (await removeFile(path)) deleted.push(path);
    }
  }
  return deleted;
}
