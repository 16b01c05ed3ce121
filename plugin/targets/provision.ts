/**
 * Pre-staging: each protection's target VM is defined on its DR site, powered off, with one disk
 * per source disk whose image is the replica's base (same virtual size as the source disk), on the
 * DR networks and with the MACs the config asks for. A VM of the same name that vmdr did not make
 * for this protection is never touched.
 *
 * Running it again brings an existing target up to date with its source's disks: a disk added to
 * the source is added to the target (on the replica's base image of it, made here when no sync has
 * brought it yet), a disk grown on the source has its base image grown. A failover boots overlays
 * of the point's own size, so growth matters for the pre-staged target itself; a missing disk
 * would stop a failover half way. Nothing else of an existing target changes, a disk the source
 * lost is left (status shows it), and a running target or a failed-over protection is refused.
 *
 * Each target is given its DR identity here (MACs, networks, the guest's hostname and addresses:
 * identity.ts), not at failover time: it does not depend on the point. Run again after the
 * config changed it, provisioning gives the target the new one; a failover checks it is in place.
 */
import { access } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { DiskSpec, HypervisorAdapter, TaskOptions, VmInfo, VmSpec } from '../../hypervisors/types.js';
import { NetworkNotFound, VmdrError } from '../../hypervisors/errors.js';
import type { Config, Protection } from '../config/schema.js';
import { isLocalSite, type SiteConnections } from '../sites/connections.js';
import { sourceSiteFor } from '../sites/source-site-for.js';
import { baseImage, protectionDir, REPLICA_IMAGE_FORMAT, serialLog } from '../replication/layout.js';
import { createImage, imageInfo } from '../replication/qemu-img.js';
import { letHypervisorReach, makeReplicaDir } from '../replication/replica/access.js';
import { growTo } from '../replication/replica/images.js';
import { ReplicaLease } from '../replication/replica/lease.js';
import { roleOf } from '../state/roles.js';
import { StateStore } from '../state/store.js';
import { dataDisks, targetDrift } from './drift.js';
import { giveIdentity, type AppliedIdentity } from './identity.js';
import { LABEL_PROTECTION, targetLabels } from './labels.js';
import { SiteStorageMissing, TargetConflict, TargetInUse } from './errors.js';

/** How long an update waits for a sync cycle writing the replica to end. */
const CYCLE_WAIT_MS = 60_000;

/** A disk an update changed: added to the target, or its base image grown to the source's size. */
export interface DiskChange {
  disk: string;
  change: 'added' | 'grown';
  sizeBytes: number;
  /** Grown: the size it had. */
  fromBytes?: number;
}

export interface ProvisionedTarget {
  protection: string;
  site: string;
  vm: string;
  action: 'defined' | 'updated' | 'unchanged';
  /** What an update changed; empty otherwise. */
  changes: DiskChange[];
  /**
   * The target's DR identity: written now, already in place, or left for now because the target
   * is not off (it runs after a failover: the next provisioning or failover gives it).
   */
  identity: AppliedIdentity['action'] | 'left';
  disks: { target: string; path: string; capacityBytes: number }[];
}

/**
 * What `vmdr protect` does with the target: stages it here when this host is the target's site;
 * on two hosts the DR site stages its targets itself (`vmdr target provision` there), and the
 * source site only names it.
 */
export async function stageTargetOf(
  config: Config,
  file: string,
  sites: SiteConnections,
  p: Protection,
  state?: StateStore,
  task: Pick<TaskOptions, 'onProgress'> = {},
): Promise<{ vm: string; action: ProvisionedTarget['action'] | 'staged-by-its-site' }> {
  if (!isLocalSite(config, p.target.site)) return { vm: p.target.vm, action: 'staged-by-its-site' };
  const [target] = await provisionTargets(config, file, sites, [p.name], state, task);
  return target!;
}

/**
 * `state` is the DR site's state file (the role of each protection, the replica lease); it is
 * opened from the config only when an existing target needs an update and none was given.
 */
export async function provisionTargets(
  config: Config,
  file: string,
  sites: SiteConnections,
  only: string[] = [],
  state?: StateStore,
  task: Pick<TaskOptions, 'onProgress'> = {},
): Promise<ProvisionedTarget[]> {
  const chosen = config.protections.filter((p) => only.length === 0 || only.includes(p.name));
  const results: ProvisionedTarget[] = [];
  let opened: StateStore | undefined;
  const stateStore = () => state ?? (opened ??= StateStore.open(config.state.path));
  try {
    // One at a time: provisioning is rare, and a clear first error beats several interleaved ones.
    for (const protection of chosen) {
      const subject = { protection: protection.name, vm: protection.target.vm };
      const report: Report = (phase, done, total, detail) => task.onProgress?.({ phase, unit: 'steps', done, total, subject, ...(detail ? { detail } : {}) });
      results.push(await provisionTarget(protection, file, sites, stateStore, report, config));
    }
  } finally {
    opened?.close();
  }
  return results;
}

type TargetDisk = ProvisionedTarget['disks'][number];

/** A target's steps: `define` (each base image made, then the VM) or `update` (each disk added or grown). */
type Report = (phase: 'define' | 'update', done: number, total: number, detail?: string) => void;

async function provisionTarget(p: Protection, file: string, sites: SiteConnections, state: () => StateStore, report: Report, config: Config): Promise<ProvisionedTarget> {
  const site = sites.site(p.target.site);
  if (!site.storage) throw new SiteStorageMissing(site.name, file);
  const storage = site.storage;
  const target = await sites.adapter(p.target.site);
  // Asked of the source's own site (its endpoint, from another host); only a final sync reads the state.
  const source = await sourceSiteFor({ config, file, sites, get state() { return state(); } }, p).vm(p);
  // A seed attached for a boot carries identity, not data: it is never replicated.
  const disks = dataDisks(source).map((d) => ({ target: d.target, path: baseImage(storage, p, d.target), capacityBytes: d.capacityBytes ?? 0 }));

  const existing = await findVm(target, p.target.vm);
  if (existing) {
    const owner = existing.labels[LABEL_PROTECTION];
    if (owner !== p.name) throw new TargetConflict(p.target.vm, target.uri, p.name, owner);
    const changes = await updateTarget(p, storage, target, source, existing, disks, state, report);
    const identity = existing.powerState === 'shutoff' ? (await giveIdentity(target, p)).action : 'left';
    const action = changes.length || identity === 'written' ? 'updated' : 'unchanged';
    return { protection: p.name, site: site.name, vm: p.target.vm, action, changes, identity, disks };
  }

  await checkNetworks(target, p);
  const steps = disks.length + 2;
  report('define', 0, steps);
  for (const [i, disk] of disks.entries()) {
    await ensureBaseImage(storage, disk, source);
    report('define', i + 1, steps, `base image of disk ${disk.target}`);
  }
  await makeReplicaDir(storage, protectionDir(storage, p));
  await letHypervisorReach(storage, p, await target.imageUser());
  await target.defineVm(targetSpec(p, storage, disks));
  report('define', steps - 1, steps, `VM ${p.target.vm}`);
  await giveIdentity(target, p);
  report('define', steps, steps, 'identity');
  return { protection: p.name, site: site.name, vm: p.target.vm, action: 'defined', changes: [], identity: 'written', disks };
}

/**
 * Adds the disks the target lacks and grows the base images smaller than the source's disks,
 * holding the replica's lease: a cycle writing a point at the same time reads those images.
 */
async function updateTarget(p: Protection, storage: string, adapter: HypervisorAdapter, source: VmInfo, target: VmInfo, disks: TargetDisk[], state: () => StateStore, report: Report): Promise<DiskChange[]> {
  const drift = targetDrift(source, target);
  const missing = drift.filter((d) => d.kind === 'missing');
  const grown = drift.filter((d) => d.kind === 'size' && d.sourceBytes! > d.targetBytes!);
  if (missing.length === 0 && grown.length === 0) {
    report('update', 0, 0, 'up to date');
    return [];
  }

  const what = [...missing.map((d) => `add disk ${d.disk}`), ...grown.map((d) => `grow disk ${d.disk}`)].join(', ');
  const role = roleOf(state().db, p.name);
  if (role.role === 'failed-over') {
    throw new TargetInUse(p.name, target.name, adapter.uri, what, `its protection is failed over${role.failover ? ` (${role.failover})` : ''}`, `bring it home with \`vmdr failback ${p.name}\` (or undo the failover with --revert), then provision`);
  }
  if (target.powerState !== 'shutoff') {
    throw new TargetInUse(p.name, target.name, adapter.uri, what, `it is ${target.powerState}`, 'a pre-staged target runs only after a failover; stop it first');
  }

  const changes: DiskChange[] = [];
  const lease = await ReplicaLease.waitFor(state(), p.name, 'provision', CYCLE_WAIT_MS);
  // An added disk may need growing too: the total is counted again at each step.
  let done = 0;
  const step = (detail?: string) => report('update', done, missing.length + grown.length, detail);
  step();
  try {
    // The identity seed stays the target's last disk: the guest finds the data disks in the
    // source's order (a disk added after the seed would come after it), and the seed may hold
    // the name the new disk takes. It is given again once the disks are in (provisionTarget).
    if (missing.length && target.disks.some((d) => d.identitySeed)) await adapter.removeGuestIdentity(target.name);
    for (const d of missing) {
      const disk = disks.find((x) => x.target === d.disk)!;
      await ensureBaseImage(storage, disk, source);
      await letHypervisorReach(storage, p, await adapter.imageUser());
      // The size makes the placeholder of a hypervisor that cannot open this host's files (DiskSpec.path).
      await adapter.addDisk(target.name, { path: disk.path, format: REPLICA_IMAGE_FORMAT, target: disk.target, sizeBytes: disk.capacityBytes });
      changes.push({ disk: d.disk, change: 'added', sizeBytes: disk.capacityBytes });
      // A base made by an early sync of the disk, which the source grew since.
      const size = (await imageInfo(disk.path)).virtualSize;
      if (disk.capacityBytes > size) grown.push({ disk: d.disk, kind: 'size', sourceBytes: disk.capacityBytes, targetBytes: size });
      done += 1;
      step(`added disk ${d.disk}`);
    }
    for (const d of grown) {
      await growTo(disks.find((x) => x.target === d.disk)!.path, d.sourceBytes!);
      const added = changes.find((c) => c.disk === d.disk);
      if (added) added.sizeBytes = d.sourceBytes!;
      else changes.push({ disk: d.disk, change: 'grown', sizeBytes: d.sourceBytes!, fromBytes: d.targetBytes! });
      done += 1;
      step(`grew disk ${d.disk}`);
    }
  } finally {
    lease.release();
  }
  return changes;
}

/** The replica's base image of a disk, made empty at the source disk's size when no sync has made it yet. */
async function ensureBaseImage(storage: string, disk: TargetDisk, source: VmInfo): Promise<void> {
  if (await exists(disk.path)) return;
  if (!disk.capacityBytes) {
    throw new VmdrError('DISK_SIZE_UNKNOWN', `cannot tell the size of disk ${disk.target} of VM "${source.name}"`, {
      subject: { vm: source.name, disk: disk.target },
    });
  }
  await makeReplicaDir(storage, dirname(disk.path));
  await createImage(disk.path, { sizeBytes: disk.capacityBytes });
}

/** `disks`: the replica's base images (pre-staging), or a boot's disks in their own format (a drill). */
export function targetSpec(p: Protection, storage: string, disks: { target: string; path: string; format?: DiskSpec['format']; capacityBytes?: number }[]): VmSpec {
  return {
    name: p.target.vm,
    memoryMiB: p.target.memoryMiB,
    vcpus: p.target.vcpus,
    boot: p.target.boot,
    disks: disks.map((d) => ({ path: d.path, format: d.format ?? REPLICA_IMAGE_FORMAT, target: d.target, ...(d.capacityBytes ? { sizeBytes: d.capacityBytes } : {}) })),
    nics: p.target.nics.map((n) => ({ network: n.network, mac: n.mac })),
    serialLog: serialLog(storage, p),
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
