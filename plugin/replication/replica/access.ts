/**
 * Who may open a replica: customers' disks, so no other local user. vmdr (root) makes every
 * directory 0700 and every image 0600 (the CLI's umask is 077, so qemu-img, xorriso and openssl
 * create files that way too). A VM booted from a replica (a failover, a drill, the pre-staged
 * target) runs as the hypervisor's user (libvirt-qemu), which must reach its images:
 *
 * - libvirt's dynamic_ownership chowns every image of the VM's chain to that user when the VM
 *   starts. It gives the top image back when the VM stops but not the backing images, so vmdr
 *   takes those back (`reclaimImages`) once the VM that used them is off.
 * - Its group gets search permission, and nothing else, on the directories from the site's storage
 *   down to the images (root:libvirt-qemu 0710): it can open a name it is given, it cannot list,
 *   create or delete one, and every other user is kept out at the storage directory. For a
 *   tenant's replica that path passes `tenants/` and `tenants/<tenant>/` (layout.ts), which get the
 *   same mode: QEMU needs search on every directory of the path and nothing more. Until a VM boots
 *   from a replica its directories stay 0700, its images 0600: QEMU reads nothing of a replica
 *   no VM of it runs on (the receiver writes through qemu-nbd, which runs as vmdr's user).
 */
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { VmdrError } from '../../../hypervisors/errors.js';
import type { ImageUser } from '../../../hypervisors/types.js';
import { protectionDir, tenantDir, tenantsIn, TENANTS_DIR, type ReplicaOwner } from '../layout.js';
import { subdirectories } from './files.js';
import { isValidProtectionName } from './names.js';

/** Group search only: see the module comment. */
const REACHABLE_DIR_MODE = 0o710;

export class StorageUnreachable extends VmdrError {
  constructor(dir: string, storage: string, user: ImageUser) {
    super('STORAGE_UNREACHABLE', `the hypervisor's user (uid ${user.uid}, gid ${user.gid}) cannot pass through ${dir} to reach site storage ${storage}`, {
      subject: { file: dir },
      remedy: `let it search that directory: chgrp ${user.gid} ${dir} && chmod g+x ${dir} (or chmod o+x ${dir}), or move the storage`,
    });
  }
}

/**
 * A directory of the replica (`storage` itself, a protection's or a disk's), 0700 from the start.
 * Missing directories above the storage are made too, 0755 as `mkdir -p` would: they hold no
 * replica, and the hypervisor's user must pass through them.
 */
export async function makeReplicaDir(storage: string, dir: string): Promise<void> {
  const made = await mkdir(dirname(storage), { recursive: true, mode: 0o755 });
  // mkdir's mode goes through the umask (077 in the CLI), so the parents it made are set explicitly.
  if (made) for (let d = dirname(storage); d.length >= made.length; d = dirname(d)) await chmod(d, 0o755);
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/**
 * Lets `user` reach the images of `owner`'s replica under `storage`: the directories from
 * the storage down get group `user.gid` and mode 0710, images lose any group and other bits (a
 * replica made before vmdr kept them private), and a directory above the storage that `user`
 * cannot pass through is refused by name. Nothing to do when the host has no such user.
 */
export async function letHypervisorReach(storage: string, owner: ReplicaOwner, user: ImageUser | undefined): Promise<void> {
  if (!user) return;
  await checkAncestors(storage, user);
  const top = protectionDir(storage, owner);
  const dirs = [...pathDown(storage, top), ...(await subdirectories(top)).map((d) => join(top, d))];
  for (const dir of dirs) {
    await makeReplicaDir(storage, dir);
    const st = await stat(dir);
    if (st.gid !== user.gid) await chown(dir, st.uid, user.gid);
    if ((st.mode & 0o7777) !== REACHABLE_DIR_MODE) await chmod(dir, REACHABLE_DIR_MODE);
    if (dir !== storage) await makePrivate(dir);
  }
}

/**
 * Takes back the images of `protection` that libvirt left owned by the hypervisor's user after a
 * VM booted on them stopped, so no other VM's process (they all run as that user) can open them.
 */
export async function reclaimImages(storage: string, owner: ReplicaOwner): Promise<void> {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const top = protectionDir(storage, owner);
  for (const dir of [top, ...(await subdirectories(top)).map((d) => join(top, d))]) {
    for (const file of await filesIn(dir)) {
      const st = await stat(file);
      if (st.uid !== uid || st.gid !== gid) await chown(file, uid, gid);
    }
  }
}

/**
 * Closes a replica written before these rules (0644 images in 0755 directories), when the
 * receiver starts: a directory keeps at most its owner's bits and group search, a file its
 * owner's bits. What QEMU needs to boot is given back by letHypervisorReach when it boots.
 */
export async function closeReplicas(storage: string): Promise<void> {
  if (!existsSync(storage)) return;
  await narrow(storage, REACHABLE_DIR_MODE);
  const tenants = tenantsIn(storage).map((t) => tenantDir(storage, t));
  for (const dir of [...(tenants.length ? [join(storage, TENANTS_DIR)] : []), ...tenants]) await narrow(dir, REACHABLE_DIR_MODE);
  const tops = [storage, ...tenants].map(async (parent) => (await subdirectories(parent)).filter(isValidProtectionName).map((p) => join(parent, p)));
  for (const top of (await Promise.all(tops)).flat()) {
    for (const dir of [top, ...(await subdirectories(top)).map((d) => join(top, d))]) {
      await narrow(dir, REACHABLE_DIR_MODE);
      await makePrivate(dir);
    }
  }
}

/** `storage`, then each directory from it down to `dir`. */
function pathDown(storage: string, dir: string): string[] {
  const path = relative(storage, dir).split(sep).filter(Boolean);
  return [storage, ...path.map((_, i) => join(storage, ...path.slice(0, i + 1)))];
}

async function makePrivate(dir: string): Promise<void> {
  for (const file of await filesIn(dir)) await narrow(file, 0o700);
}

/** Drops the mode bits outside `allowed`, when there are any. */
async function narrow(path: string, allowed: number): Promise<void> {
  const mode = (await stat(path)).mode & 0o7777;
  if (mode & ~allowed) await chmod(path, mode & allowed);
}

async function filesIn(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(dir, e.name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Every directory above the storage must let `user` search it: vmdr does not change what it does not own. */
async function checkAncestors(storage: string, user: ImageUser): Promise<void> {
  for (let dir = dirname(storage); ; dir = dirname(dir)) {
    // A missing one is made by makeReplicaDir, searchable by all.
    const st = await stat(dir).catch(() => undefined);
    if (st && !canSearch(st, user)) throw new StorageUnreachable(dir, storage, user);
    if (dirname(dir) === dir) return;
  }
}

function canSearch(st: { uid: number; gid: number; mode: number }, user: ImageUser): boolean {
  if (st.uid === user.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === user.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}
