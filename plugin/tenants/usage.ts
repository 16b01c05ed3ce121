/**
 * What each tenant's replicas occupy on a DR site: the bytes allocated on disk (st_blocks × 512,
 * what `du` counts; a file linked twice counts once) by every file of every replica of the tenant:
 * the base and every point's overlay of each disk, and the boot overlays of its failovers and
 * drills while they exist. Sparse images count what they hold, not their virtual size.
 *
 * A replica is the tenant's when its protection is the tenant's in the config; a replica under
 * `tenants/<tenant>/` that no protection of the config names any more (a protection removed, its
 * replica kept) is still that tenant's, and so is a tenant's replica made before tenants had
 * directories, at the storage's top (layout.ts).
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { tenantDir, tenantsIn } from '../replication/layout.js';
import { subdirectories } from '../replication/replica/files.js';
import { isValidProtectionName } from '../replication/replica/names.js';

export interface TenantReplica {
  protection: string;
  tenant: string;
  /** The replica's directory. */
  dir: string;
}

/** Bytes used by each tenant's replicas in `storage` (a DR site's), by tenant name; a tenant with none is absent. */
export async function tenantUsage(storage: string, config: Pick<Config, 'protections'>): Promise<Map<string, number>> {
  const used = new Map<string, number>();
  const seen = new Set<string>();
  for (const r of await tenantReplicas(storage, config)) used.set(r.tenant, (used.get(r.tenant) ?? 0) + (await allocatedBytes(r.dir, seen)));
  return used;
}

/** Every replica directory in `storage` that belongs to a tenant, with its tenant. */
export async function tenantReplicas(storage: string, config: Pick<Config, 'protections'>): Promise<TenantReplica[]> {
  const tenantOf = new Map(config.protections.map((p) => [p.name, p.tenant]));
  const found: TenantReplica[] = [];
  const add = (protection: string, dir: string, placedUnder?: string) => {
    const tenant = tenantOf.has(protection) ? tenantOf.get(protection) : placedUnder;
    if (tenant !== undefined) found.push({ protection, tenant, dir });
  };
  for (const protection of (await subdirectories(storage)).filter(isValidProtectionName)) add(protection, join(storage, protection));
  for (const tenant of tenantsIn(storage)) {
    const dir = tenantDir(storage, tenant);
    for (const protection of (await subdirectories(dir)).filter(isValidProtectionName)) add(protection, join(dir, protection), tenant);
  }
  return found;
}

/** What `du -c --block-size=1` says of the files under `dir` (the directories themselves are not counted); `seen`: inodes counted already. */
export async function allocatedBytes(dir: string, seen = new Set<string>()): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    // Removed while counted (a drill's overlay, a merge): it occupies nothing now.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      total += await allocatedBytes(path, seen);
      continue;
    }
    const st = await lstat(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!st || !st.isFile()) continue;
    const inode = `${st.dev}:${st.ino}`;
    if (seen.has(inode)) continue;
    seen.add(inode);
    total += st.blocks * 512;
  }
  return total;
}
