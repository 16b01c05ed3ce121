/**
 * The checkpoints one protection keeps on its source VM. Their names carry the protection, so
 * several protections of one VM (fan-out to several DR sites) keep independent chains, and vmdr
 * never touches a checkpoint another tool made.
 */
import type { ChangeTracker } from '../../../hypervisors/types.js';

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export function newCheckpointName(protection: string, now = Date.now()): string {
  return `vmdr-${protection}-${now}`;
}

export function isCheckpointOf(protection: string, name: string): boolean {
  return new RegExp(`^vmdr-${escape(protection)}-\\d+$`).test(name);
}

/** Deletes this protection's checkpoints among `names` except `keep`; libvirt merges each bitmap into its parent. */
export async function pruneCheckpoints(tracker: ChangeTracker, vm: string, protection: string, names: string[], keep: string | undefined): Promise<string[]> {
  const doomed = names.filter((n) => n !== keep && isCheckpointOf(protection, n));
  // Newest first: deleting a leaf is the cheapest merge for QEMU.
  for (const name of [...doomed].reverse()) await tracker.deleteCheckpoint(vm, name);
  return doomed;
}
