/**
 * Changed-block tracking for the disks libvirt cannot checkpoint: raw files and block devices
 * (LVM logical volumes, loop devices), whose images have no room for a persistent bitmap.
 *
 * Why QEMU's monitor. libvirt 9.0 (Debian 12) refuses a checkpoint bitmap on a raw disk
 * ("checkpoint for disk vdb unsupported for storage type raw") and its backup API has no transient
 * bitmap of its own. QEMU keeps a dirty bitmap on any block node in memory
 * (`block-dirty-bitmap-add` with `persistent: false`), so vmdr asks QEMU for one through libvirt's
 * monitor passthrough (virDomainQemuMonitorCommand, libvirt-qemu.so), over the adapter's one
 * connection. libvirt notes "custom-monitor" in the VM's log and manages it as before. libvirt's
 * checkpoint is still made, with the raw disks `checkpoint='no'` (libvirt accepts a checkpoint
 * holding no bitmap at all): it names the instant and lists the disks the VM had then.
 *
 * One cycle, for each raw disk (its bitmaps are named after libvirt's checkpoints):
 * - before the backup begins, a bitmap named after the new checkpoint starts recording, so every
 *   write after the backup's instant is in it;
 * - once the backup's exports are frozen, the bitmap of `since` is copied into a disabled one
 *   (`<checkpoint>.since`): everything since `since` up to a moment after the instant, a superset
 *   of what the frozen export changed (blocks written in that short gap travel again next cycle).
 *   QEMU exports only a disabled bitmap over NBD;
 * - the copy is exported read-only on the backup's own NBD server as `<disk>.dirty`, and the cycle
 *   reads its `qemu:dirty-bitmap:` context there; the data comes from the frozen export.
 * Nothing is cleared or rotated in place: the bitmap of `since` records on until that checkpoint
 * is deleted after the receiver's acknowledgement, so a failed cycle leaves it whole.
 *
 * QEMU holds them in memory only: a VM restart, a QEMU crash or a host restart drops them. A raw
 * disk whose bitmap of `since` is missing is compared by hashes, and the cycle says why.
 */
import { HypervisorOperationFailed } from '../errors.js';
import type { LibvirtConnection } from './connection.js';

/** QEMU's default for qcow2 and the replica's hash block: one granule is one compared block. */
const GRANULARITY = 64 * 1024;

const COPY_SUFFIX = '.since';

/** A raw disk of a running VM: the block node its bitmaps live on, and their names. */
export interface RawDiskNode {
  target: string;
  node: string;
  bitmaps: Set<string>;
}

/** What the cycle reads a raw disk's changes from. */
export interface ChangesExport {
  exportName: string;
  context: string;
}

interface BlockNode {
  'node-name': string;
  'dirty-bitmaps'?: { name: string }[];
}

async function qmp<T>(conn: LibvirtConnection, vm: string, operation: string, execute: string, args?: object): Promise<T> {
  const text = await conn.call({ operation, vm, requires: 'running' }, 'monitorCommand', vm, JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }));
  const answer = JSON.parse(text) as { return?: T; error?: { desc: string } };
  if (answer.error) throw new HypervisorOperationFailed(operation, conn.uri, `QEMU: ${answer.error.desc}`, { vm });
  return answer.return as T;
}

/**
 * Each raw disk's node: libvirt names its nodes after the source's `index` in the live XML
 * (`libvirt-N-format`, or `libvirt-N-storage` where it needs no format layer). Looked up by name,
 * not by the device's top node, which a running backup covers with its copy-before-write filter.
 */
export async function rawDiskNodes(conn: LibvirtConnection, vm: string, disks: { target: string; index?: string }[]): Promise<RawDiskNode[]> {
  if (disks.length === 0) return [];
  const nodes = await qmp<BlockNode[]>(conn, vm, 'read block nodes', 'query-named-block-nodes', { flat: true });
  return disks.map((d) => {
    const node = nodes.find((n) => n['node-name'] === `libvirt-${d.index}-format`) ?? nodes.find((n) => n['node-name'] === `libvirt-${d.index}-storage`);
    if (!d.index || !node) throw new HypervisorOperationFailed('find a raw disk in QEMU', conn.uri, `disk ${d.target} has no block node (libvirt index ${d.index ?? 'none'})`, { vm });
    return { target: d.target, node: node['node-name'], bitmaps: new Set((node['dirty-bitmaps'] ?? []).map((b) => b.name)) };
  });
}

/** Starts the bitmap `name` on every disk at one instant. */
export async function startBitmaps(conn: LibvirtConnection, vm: string, disks: RawDiskNode[], name: string): Promise<void> {
  if (disks.length === 0) return;
  const actions = disks.map((d) => ({ type: 'block-dirty-bitmap-add', data: { node: d.node, name, granularity: GRANULARITY, persistent: false } }));
  await qmp(conn, vm, 'start dirty bitmaps', 'transaction', { actions });
}

/** Removes the bitmap `name` where it is; gone already is fine. */
export async function removeBitmaps(conn: LibvirtConnection, vm: string, disks: RawDiskNode[], name: string): Promise<void> {
  for (const d of disks.filter((x) => x.bitmaps.has(name))) {
    await qmp(conn, vm, 'remove dirty bitmap', 'block-dirty-bitmap-remove', { node: d.node, name });
    d.bitmaps.delete(name);
  }
}

/**
 * What a process that died mid-cycle left: copies of `since` (disabled, they only cost memory)
 * and bitmaps of a checkpoint libvirt never made (they would record for ever). A copy still
 * exported is busy and refuses to go; it is left to its session.
 */
export async function removeLeftovers(conn: LibvirtConnection, vm: string, disks: RawDiskNode[], checkpoints: string[]): Promise<void> {
  const left = (b: string) => b.startsWith('vmdr-') && (b.endsWith(COPY_SUFFIX) || !checkpoints.includes(b));
  for (const d of disks) {
    for (const name of [...d.bitmaps].filter(left)) {
      await qmp(conn, vm, 'remove dirty bitmap', 'block-dirty-bitmap-remove', { node: d.node, name }).then(
        () => d.bitmaps.delete(name),
        () => undefined,
      );
    }
  }
}

function exportId(disk: string): string {
  return `vmdr-changes-${disk}`;
}

/**
 * Freezes what changed on each disk since `since` (bitmap copies made at one instant) and exports
 * it on the NBD server the backup started. Undoes what it made when a step fails.
 */
export async function exportChanges(conn: LibvirtConnection, vm: string, disks: RawDiskNode[], since: string, checkpoint: string): Promise<Map<string, ChangesExport>> {
  const copy = `${checkpoint}${COPY_SUFFIX}`;
  const exported = new Map<string, ChangesExport>();
  if (disks.length === 0) return exported;
  await qmp(conn, vm, 'copy dirty bitmaps', 'transaction', {
    actions: disks.flatMap((d) => [
      { type: 'block-dirty-bitmap-add', data: { node: d.node, name: copy, granularity: GRANULARITY, persistent: false, disabled: true } },
      { type: 'block-dirty-bitmap-merge', data: { node: d.node, target: copy, bitmaps: [since] } },
    ]),
  });
  for (const d of disks) d.bitmaps.add(copy);
  try {
    for (const d of disks) {
      const exportName = `${d.target}.dirty`;
      await qmp(conn, vm, 'export dirty bitmap', 'block-export-add', { type: 'nbd', id: exportId(d.target), 'node-name': d.node, name: exportName, writable: false, bitmaps: [copy] });
      exported.set(d.target, { exportName, context: `qemu:dirty-bitmap:${copy}` });
    }
  } catch (err) {
    await endChanges(conn, vm, disks, checkpoint, [...exported.keys()]).catch(() => undefined);
    throw err;
  }
  return exported;
}

/**
 * Ends the exports exportChanges made, before the backup job ends. A failure is not an error: the
 * job's end stops their NBD server, and QEMU every export on it.
 */
export async function unexportChanges(conn: LibvirtConnection, vm: string, targets: string[]): Promise<void> {
  for (const t of targets) await qmp(conn, vm, 'end dirty bitmap export', 'block-export-del', { id: exportId(t) }).catch(() => undefined);
}

/** Removes the bitmap copies of `checkpoint`'s cycle, once their exports are gone. */
export async function removeCopies(conn: LibvirtConnection, vm: string, disks: RawDiskNode[], checkpoint: string): Promise<void> {
  await removeBitmaps(conn, vm, disks, `${checkpoint}${COPY_SUFFIX}`);
}

async function endChanges(conn: LibvirtConnection, vm: string, disks: RawDiskNode[], checkpoint: string, targets: string[]): Promise<void> {
  await unexportChanges(conn, vm, targets);
  await removeCopies(conn, vm, disks, checkpoint);
}
