/**
 * Pre-staging: each protection's target VM is defined on its DR site, powered off, with one disk
 * per source disk whose image is the replica's base (same virtual size as the source disk), on the
 * DR networks and with the MACs the config asks for. Running it again changes nothing; a VM of the
 * same name that vmdr did not make for this protection is never touched.
 */
import { access } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { HypervisorAdapter, VmInfo, VmSpec } from '../../hypervisors/types.js';
import { NetworkNotFound, VmdrError } from '../../hypervisors/errors.js';
import type { Config, Protection } from '../config/schema.js';
import type { SiteConnections } from '../sites/connections.js';
import { baseImage, protectionDir, serialLog } from '../replication/layout.js';
import { createImage } from '../replication/qemu-img.js';
import { letHypervisorReach, makeReplicaDir } from '../replication/replica/access.js';
import { LABEL_PROTECTION, targetLabels } from './labels.js';
import { SiteStorageMissing, TargetConflict } from './errors.js';

export interface ProvisionedTarget {
  protection: string;
  site: string;
  vm: string;
  action: 'defined' | 'unchanged';
  disks: { target: string; path: string; capacityBytes: number }[];
}

export async function provisionTargets(
  config: Config,
  file: string,
  sites: SiteConnections,
  only: string[] = [],
): Promise<ProvisionedTarget[]> {
  const chosen = config.protections.filter((p) => only.length === 0 || only.includes(p.name));
  const results: ProvisionedTarget[] = [];
  // One at a time: provisioning is rare, and a clear first error beats several interleaved ones.
  for (const protection of chosen) results.push(await provisionTarget(protection, file, sites));
  return results;
}

async function provisionTarget(p: Protection, file: string, sites: SiteConnections): Promise<ProvisionedTarget> {
  const site = sites.site(p.target.site);
  if (!site.storage) throw new SiteStorageMissing(site.name, file);
  const target = await sites.adapter(p.target.site);
  const source = await (await sites.adapter(p.source.site)).getVm(p.source.vm);
  const disks = source.disks
    // A seed attached for a boot carries identity, not data: it is never replicated.
    .filter((d) => d.device === 'disk' && !d.identitySeed)
    .map((d) => ({ target: d.target, path: baseImage(site.storage!, p.name, d.target), capacityBytes: d.capacityBytes ?? 0 }));

  const existing = await findVm(target, p.target.vm);
  if (existing) {
    const owner = existing.labels[LABEL_PROTECTION];
    if (owner !== p.name) throw new TargetConflict(p.target.vm, target.uri, p.name, owner);
    return { protection: p.name, site: site.name, vm: p.target.vm, action: 'unchanged', disks };
  }

  await checkNetworks(target, p);
  for (const disk of disks) {
    if (await exists(disk.path)) continue;
    if (!disk.capacityBytes) {
      throw new VmdrError('DISK_SIZE_UNKNOWN', `cannot tell the size of disk ${disk.target} of VM "${source.name}"`, {
        subject: { vm: source.name, host: p.source.site },
      });
    }
    await makeReplicaDir(site.storage, dirname(disk.path));
    await createImage(disk.path, { sizeBytes: disk.capacityBytes });
  }
  await makeReplicaDir(site.storage, protectionDir(site.storage, p.name));
  await letHypervisorReach(site.storage, p.name, await target.imageUser());
  await target.defineVm(targetSpec(p, site.storage, disks));
  return { protection: p.name, site: site.name, vm: p.target.vm, action: 'defined', disks };
}

export function targetSpec(p: Protection, storage: string, disks: { target: string; path: string }[]): VmSpec {
  return {
    name: p.target.vm,
    memoryMiB: p.target.memoryMiB,
    vcpus: p.target.vcpus,
    boot: p.target.boot,
    disks: disks.map((d) => ({ path: d.path, format: 'qcow2', target: d.target })),
    nics: p.target.nics.map((n) => ({ network: n.network, mac: n.mac })),
    serialLog: serialLog(storage, p.name),
    labels: targetLabels(p.name, p.tenant),
    template: p.target.template,
  };
}

async function checkNetworks(adapter: HypervisorAdapter, p: Protection): Promise<void> {
  const networks = new Set((await adapter.listNetworks()).map((n) => n.name));
  for (const nic of p.target.nics) {
    if (!networks.has(nic.network)) throw new NetworkNotFound(nic.network, adapter.uri);
  }
}

async function findVm(adapter: HypervisorAdapter, name: string): Promise<VmInfo | undefined> {
  try {
    return await adapter.getVm(name);
  } catch (err) {
    if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return undefined;
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
