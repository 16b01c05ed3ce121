/**
 * Deletes overlays of a protection that no committed point and no unfinished merge refers to:
 * pending points that were never committed, overlays left after a merge, and overlays made ahead
 * for a next point (but those in `keep`, absolute paths). Caller holds the lease.
 */
import { join } from 'node:path';
import { pendingMerge } from '../../state/merges.js';
import { pointRows } from '../../state/points.js';
import type { StateStore } from '../../state/store.js';
import { diskDir, protectionDir } from '../layout.js';
import { overlayFilesIn, subdirectories } from './files.js';
import { removeFile } from './images.js';

export async function deleteOrphans(storage: string, state: StateStore, protection: string, keep: ReadonlySet<string> = new Set()): Promise<string[]> {
  const referenced = new Set<string>();
  for (const point of pointRows(state.db, protection)) for (const d of point.disks) referenced.add(join(d.disk, d.image));
  for (const [disk, files] of Object.entries(pendingMerge(state.db, protection)?.plan ?? {})) for (const f of files) referenced.add(join(disk, f));
  const deleted: string[] = [];
  for (const disk of await subdirectories(protectionDir(storage, protection))) {
    for (const file of await overlayFilesIn(diskDir(storage, protection, disk))) {
      const path = join(diskDir(storage, protection, disk), file);
      if (referenced.has(join(disk, file)) || keep.has(path)) continue;
      if (await removeFile(path)) deleted.push(path);
    }
  }
  return deleted;
}
