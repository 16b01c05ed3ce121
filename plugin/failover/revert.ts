/**
 * Undoing a failover of one VM, the DR side losing: the target is powered off and what it wrote
 * is thrown away, it goes back to being the pre-staged replica target (its base images, its
 * guard), the point is unpinned, replication resumes from the source, and a source this failover
 * stopped or fenced is started again. The replica chain was never written, so the next sync is an
 * ordinary one. This is the "explicit resync" way back; failback is the way that keeps DR changes.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { baseImage, REPLICA_IMAGE_FORMAT } from '../replication/layout.js';
import { reclaimImages } from '../replication/replica/access.js';
import type { FailoverJournal } from './journal.js';
import { fenceOf } from '../sites/fence.js';
import { sourceSiteFor } from '../sites/source-site-for.js';
import { roleOf, setRole } from '../state/roles.js';
import { targetLabels } from '../targets/labels.js';
import { drAdapter, replicasOf, storageOf, type RunContext } from './context.js';
import { failoverBoot, releaseBootDisks } from './boot-disks.js';
import { releasePoint, type ChosenPoint } from './recovery-point.js';

export async function revertVm(ctx: RunContext, p: Protection, original: FailoverJournal): Promise<void> {
  const j = ctx.journal;
  const dr = await drAdapter(ctx, p);
  await j.step(p.name, 'stop-target', async () => {
    await dr.stop(p.target.vm, { mode: 'force' });
    return {};
  });
  await j.step(p.name, 'restore-target', async () => {
    await restoreTarget(ctx, p);
    const point = original.result<ChosenPoint>(p.name, 'choose-point');
    if (point) await releaseBootDisks(dr, point, failoverBoot(original.failover));
    return {};
  });
  await j.step(p.name, 'resume-replication', async () => {
    const role = roleOf(ctx.state.db, p.name);
    setRole(ctx.state.db, p.name, 'replicating');
    if (role.point) releasePoint(replicasOf(ctx, p), p.name, role.point);
    return {};
  });
  await j.step(p.name, 'restart-source', async () => {
    // A source this failover stopped or fenced, or one its site fenced for this failover when it
    // came back (its site was lost during the failover); never a source that was simply off.
    const stopped = original.done(p.name, 'stop-source') || original.result<{ fenced?: boolean }>(p.name, 'fence-source')?.fenced === true;
    // Started by its own site: the start token is written on the host whose hook reads it.
    const source = sourceSiteFor(ctx, p);
    const vm = await source.vm(p).catch((err: unknown) => {
      if (err instanceof VmdrError && ['VM_NOT_FOUND', 'HYPERVISOR_UNREACHABLE', 'SOURCE_SITE_UNREACHABLE'].includes(err.code)) return undefined;
      throw err;
    });
    if (!vm) return { started: false, why: `source site "${p.source.site}" or its VM is not there` };
    const fence = fenceOf(vm);
    const fencedForThis = fence?.protection === p.name && fence.failover === original.failover;
    if (vm.powerState !== 'shutoff' || !(stopped || fencedForThis)) return { started: false };
    await source.startSource(p);
    return { started: true };
  });
}

/**
 * The target goes back to being the pre-staged replica target: its disks the replica's base
 * images, labelled (and so guarded) as a target again. What it booted from is the caller's. Its
 * identity stays: it is the config's, given at provisioning (or by the failover, when the config
 * had changed since), and the next failover finds it in place.
 */
export async function restoreTarget(ctx: RunContext, p: Protection): Promise<void> {
  const dr = await drAdapter(ctx, p);
  const storage = storageOf(ctx, p);
  const vm = await dr.getVm(p.target.vm);
  const disks = vm.disks.filter((d) => d.device === 'disk' && !d.identitySeed);
  await dr.setDiskImages(p.target.vm, disks.map((d) => ({ target: d.target, path: baseImage(storage, p, d.target), format: REPLICA_IMAGE_FORMAT })));
  await dr.setLabels(p.target.vm, targetLabels(p.name, p.tenant));
  // The target is off: the point images libvirt lent to its QEMU come back to vmdr.
  await reclaimImages(storage, p);
}
