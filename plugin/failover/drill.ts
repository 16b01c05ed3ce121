/**
 * A test failover (a drill) of one VM: the chosen point boots in a throwaway VM on the drill's own
 * bubble network, with the target's identity, and must come up healthy. The source, the replica
 * and the pre-staged target are never touched, and replication goes on: the point is only pinned
 * for as long as the drill runs. Everything the drill made is removed afterwards.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { protectionDir } from '../replication/layout.js';
import { reclaimImages } from '../replication/replica/access.js';
import { LABEL_FAILOVER, LABEL_PROTECTION, LABEL_ROLE, LABEL_TENANT, ROLE_DRILL } from '../targets/labels.js';
import { targetSpec } from '../targets/provision.js';
import { identityStep, startAndWatch, type PreparedVm } from './boot.js';
import { prepareBootDisks, releaseBootDisks } from './boot-disks.js';
import { drAdapter, replicasOf, storageOf, taskOf, type RunContext } from './context.js';
import { evidenceStep } from './evidence.js';
import { choosePointFor, describePoint, releasePoint, type ChosenPoint } from './recovery-point.js';

/** Drill names carry the run's id, so two drills of one VM never share a VM, a file or a network. */
export function drillNames(ctx: RunContext, p: Protection) {
  const short = ctx.id.slice(-6);
  return {
    vm: `${p.target.vm}-drill-${short}`,
    boot: `drill-${ctx.id}`,
    console: join(protectionDir(storageOf(ctx, p), p), `drill-${ctx.id}-console.log`),
  };
}

/** One bubble per drill and tenant: tenants never share a network, even in a drill. */
export function bubbleName(ctx: RunContext, tenant: string | undefined): string {
  return `vmdr-drill-${ctx.id.slice(-6)}${tenant ? `-${tenant}` : ''}`;
}

/** Everything up to the drill VM's start; the start, the health wait and the evidence are the PreparedVm's boot. */
export async function prepareDrill(ctx: RunContext, p: Protection): Promise<PreparedVm> {
  const j = ctx.journal;
  const names = drillNames(ctx, p);
  const bubble = bubbleName(ctx, p.tenant);
  const replicas = replicasOf(ctx, p);
  const point = await j.step(p.name, 'choose-point', async () =>
    describePoint(choosePointFor(ctx, p, replicas, { point: ctx.request.point, at: ctx.request.at ? new Date(ctx.request.at) : undefined })),
  );
  await j.step(p.name, 'pin-point', async () => {
    const pinnedBefore = replicas.getPoint(p.name, point.id).pinned;
    replicas.pinPoint(p.name, point.id);
    return { pinnedBefore };
  });
  const dr = await drAdapter(ctx, p);
  const drill: Protection = {
    ...p,
    target: { ...p.target, vm: names.vm, nics: p.target.nics.map((n) => ({ ...n, network: bubble })) },
  };
  await j.step(p.name, 'define-drill-vm', async () => {
    await dr.ensureIsolatedNetwork({ name: bubble, labels: { [LABEL_ROLE]: ROLE_DRILL, [LABEL_FAILOVER]: ctx.id, ...(p.tenant ? { [LABEL_TENANT]: p.tenant } : {}) } });
    const disks = await prepareBootDisks(dr, point, names.boot, { storage: storageOf(ctx, p), protection: p }, taskOf(ctx, { protection: p.name, vm: names.vm }));
    const exists = await dr.getVm(names.vm).then(
      () => true,
      (err: unknown) => (err instanceof VmdrError && err.code === 'VM_NOT_FOUND' ? false : Promise.reject(err)),
    );
    if (!exists) {
      await dr.defineVm({
        ...targetSpec(drill, storageOf(ctx, p), disks),
        // The pre-staged target's hardware (a vSphere linked clone of it); its disks are the boot's.
        cloneOf: p.target.vm,
        serialLog: names.console,
        labels: { [LABEL_ROLE]: ROLE_DRILL, [LABEL_PROTECTION]: p.name, [LABEL_FAILOVER]: ctx.id, ...(p.tenant ? { [LABEL_TENANT]: p.tenant } : {}) },
      });
    }
    return { vm: names.vm, network: bubble, disks };
  });
  await identityStep(ctx, dr, drill);
  return {
    boot: async () => {
      await startAndWatch(ctx, dr, drill, names.console).catch(async (err: unknown) => {
        // A VM that booted and did not come up healthy is where its screen and console matter most.
        // The health failure is what the drill reports: evidence that cannot be taken is recorded by
        // its own step as failed, and does not replace it.
        if (j.done(p.name, 'start')) await evidenceStep(ctx, dr, drill, names.console).catch(() => undefined);
        throw err;
      });
      await evidenceStep(ctx, dr, drill, names.console);
    },
  };
}

/**
 * Removes what a drill of `p` made, whatever step it reached (a resumed or reverted drill runs it
 * too). The bubble network is the run's, removed once all its VMs are gone.
 */
export async function removeDrill(ctx: RunContext, p: Protection): Promise<void> {
  const j = ctx.journal;
  const names = drillNames(ctx, p);
  const point = j.result<ChosenPoint>(p.name, 'choose-point');
  const pinned = j.result<{ pinnedBefore: boolean }>(p.name, 'pin-point');
  await j.step(p.name, 'remove-drill-vm', async () => {
    const dr = await drAdapter(ctx, p);
    const gone = (err: unknown) => {
      if (!(err instanceof VmdrError && err.code === 'VM_NOT_FOUND')) throw err;
    };
    await dr.stop(names.vm, { mode: 'force' }).catch((err: unknown) => {
      if (!(err instanceof VmdrError && err.code === 'INVALID_POWER_STATE')) gone(err);
    });
    // Before the VM goes: the VM's definition is what says where its identity is kept.
    await dr.removeGuestIdentity(names.vm).catch(gone);
    await dr.undefine(names.vm).catch(gone);
    if (point) await releaseBootDisks(dr, point, names.boot);
    await reclaimImages(storageOf(ctx, p), p);
    await rm(names.console, { force: true });
    if (point && pinned && !pinned.pinnedBefore) releasePoint(replicasOf(ctx, p), p.name, point.id);
    return {};
  });
}
