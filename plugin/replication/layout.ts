/**
 * Where a protection's replica lives on its DR site. One directory per protection, one per disk
 * inside it; the base image of a disk is what the pre-staged target VM is defined on.
 *
 * A tenant's protections live under the tenant's own directory, `<storage>/tenants/<tenant>/<protection>`,
 * so what a tenant occupies on the DR host is one subtree; a protection without a tenant lives at
 * `<storage>/<protection>`. A replica is never moved: its overlays name their backing files by
 * absolute path, the pre-staged target VM and boot overlays point at its images, and the state
 * file resolves image names against its directory. So a replica that already exists somewhere
 * else (made before tenants had directories, or before its protection changed tenant) is used
 * where it is, and only a replica that does not exist yet is made at the tenant's place.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { TENANTS_DIR, type Config } from '../config/schema.js';

/** The replica's images are qcow2 (a chain of overlays needs backing files): the base too. */
export const REPLICA_IMAGE_FORMAT = 'qcow2';

/** The directory of the site storage that holds one directory per tenant (the config refuses it as a protection's name). */
export { TENANTS_DIR };

/** Whose replica: the protection's name, and its tenant when it has one. */
export interface ReplicaOwner {
  name: string;
  tenant?: string | undefined;
}

/** The owner of the replica named `protection`, by the config's protections. */
export function replicaOwner(config: Pick<Config, 'protections'>, protection: string): ReplicaOwner {
  return { name: protection, tenant: config.protections.find((p) => p.name === protection)?.tenant };
}

export function tenantDir(storage: string, tenant: string): string {
  return join(storage, TENANTS_DIR, tenant);
}

/** Where a replica of `owner` is made: its tenant's directory, or the storage itself. */
export function homeDir(storage: string, owner: ReplicaOwner): string {
  return owner.tenant === undefined ? join(storage, owner.name) : join(tenantDir(storage, owner.tenant), owner.name);
}

/** The replica's directory: where it already is, else where it is to be made (see the module comment). */
export function protectionDir(storage: string, owner: ReplicaOwner): string {
  const home = homeDir(storage, owner);
  if (existsSync(home)) return home;
  return elsewhere(storage, owner.name) ?? home;
}

export function diskDir(storage: string, owner: ReplicaOwner, disk: string): string {
  return join(protectionDir(storage, owner), disk);
}

export function baseImage(storage: string, owner: ReplicaOwner, disk: string): string {
  return join(diskDir(storage, owner, disk), 'base.qcow2');
}

export function serialLog(storage: string, owner: ReplicaOwner): string {
  return join(protectionDir(storage, owner), 'console.log');
}

/** The tenants that have a directory in `storage`. */
export function tenantsIn(storage: string): string[] {
  return directoriesIn(join(storage, TENANTS_DIR));
}

/** The existing replica directory of `protection` outside its home: untenanted, or under any tenant. */
function elsewhere(storage: string, protection: string): string | undefined {
  const candidates = [join(storage, protection), ...tenantsIn(storage).map((t) => join(tenantDir(storage, t), protection))];
  return candidates.find((dir) => existsSync(dir));
}

function directoriesIn(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
