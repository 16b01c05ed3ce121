/**
 * A real failover of one VM (unplanned or planned): the pre-staged target takes over from its
 * source. Planned: the source is shut down and a final delta shipped, so nothing is lost.
 * Unplanned: the source is gone (or fenced when forced) and the chosen point is booted. Either way
 * the replica stops taking points (split-brain guard), the point is pinned, the target boots
 * from its own overlay on top of it with the DR identity, and it must come up healthy.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { ReplicaLease } from '../replication/replica/lease.js';
import { sourceSiteFor } from '../sites/source-site-for.js';
import { setRole } from '../state/roles.js';
import { LABEL_FAILOVER, LABEL_ROLE, ROLE_PROMOTED, targetLabels } from '../targets/labels.js';
import { identityStep, startAndWatch, type PreparedVm } from './boot.js';
import { DEFAULT_SHUTDOWN_TIMEOUT_MS, drAdapter, replicasOf, storageOf, taskOf, type RunContext } from './context.js';
import { failoverBoot, prepareBootDisks } from './boot-disks.js';
import type { Preflight } from './preflight.js';
import { choosePoint, choosePointFor, describePoint, type ChosenPoint } from './recovery-point.js';

/** How long an in-flight sync cycle may take to finish once the replica stopped taking new ones. */
const REPLICA_IDLE_TIMEOUT_MS = 120_000;

/** Everything up to the target's start; the start and the health wait are the PreparedVm's boot. */
export async function prepareTakeOver(ctx: RunContext, p: Protection, pre: Preflight): Promise<PreparedVm> {
  const j = ctx.journal;
  const source = sourceSiteFor(ctx, p);
  let finalPoint: string | undefined;
  if (ctx.request.kind === 'planned') {
    // The source site stops its VM and ships the final delta; this side boots what that committed.
    await j.step(p.name, 'stop-source', async () => {
      const how = { mode: 'graceful' as const, timeoutMs: ctx.request.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS, forceOnTimeout: true };
      const stopped = await source.stop(p, how, ctx.signal);
      return { sourceStoppedAt: stopped.stoppedAt, was: stopped.was };
    });
    ({ point: finalPoint } = await j.step(p.name, 'final-sync', () =>
      source.finalSync(p, taskOf(ctx)),
    ));
  } else if (pre.source === 'running' || pre.source === 'paused' || (ctx.request.watch && pre.source !== 'unreachable' && pre.source !== 'missing')) {
    await j.step(p.name, 'fence-source', async () => {
      // Forced by the user (or the watch): two live copies of one server must never be, so the
      // source goes off; the watch fences one it found off too, so that no start brings it back.
      // Only its own site may do that; a site that stopped answering since the preflight is
      // recorded as not fenced, and the failover goes on (the site is lost).
      try {
        return { fenced: true, ...(await source.fence(p, ctx.id)) };
      } catch (err) {
        if (!(err instanceof VmdrError && err.code === 'SOURCE_SITE_UNREACHABLE')) throw err;
        return { fenced: false, why: err.message };
      }
    });
  } else if (pre.source === 'unreachable') {
    await j.step(p.name, 'fence-source', async () => ({ fenced: false, why: `source site "${p.source.site}" did not answer` }));
  }

  await j.step(p.name, 'stop-replication', async () => {
    setRole(ctx.state.db, p.name, 'failed-over', { failover: ctx.id });
    await waitForReplicaIdle(ctx, p);
    return {};
  });
  if (ctx.request.kind === 'planned') {
    // The source this failover stopped stays stopped: fenced once no cycle can commit any more
    // (the source site's loop lifts a fence older than a cycle it commits).
    await j.step(p.name, 'fence-source', async () => ({ fenced: true, ...(await source.fence(p, ctx.id)) }));
  }
  const replicas = replicasOf(ctx, p);
  const point = await j.step(p.name, 'choose-point', async () => {
    // Planned: the point the final sync committed, taken after the source stopped (the two sites'
    // clocks are not compared: a point's time is on this site's clock, the stop on the source's).
    const chosen = finalPoint ? choosePoint(replicas, p, { point: finalPoint }) : choosePointFor(ctx, p, replicas, { point: ctx.request.point, at: ctx.request.at ? new Date(ctx.request.at) : undefined });
    return describePoint(chosen);
  });
  await j.step(p.name, 'pin-point', async () => {
    replicas.pinPoint(p.name, point.id);
    setRole(ctx.state.db, p.name, 'failed-over', { failover: ctx.id, point: point.id });
    return {};
  });
  const dr = await drAdapter(ctx, p);
  const promoted = { ...targetLabels(p.name, p.tenant), [LABEL_ROLE]: ROLE_PROMOTED, [LABEL_FAILOVER]: ctx.id };
  // One redefinition of the target for its boot disks and its promotion; `promote` then only
  // records it (it writes the labels itself for a run whose prepare-disks did not: an older one).
  const prepared = await j.step(p.name, 'prepare-disks', async () => {
    const at = { storage: storageOf(ctx, p), protection: p, vm: p.target.vm, labels: promoted };
    const disks = await prepareBootDisks(dr, point, failoverBoot(ctx.id), at, taskOf(ctx, { protection: p.name, vm: p.target.vm }));
    return { disks, promoted: true };
  });
  await j.step(p.name, 'promote', async () => {
    if (!prepared.promoted) await dr.setLabels(p.target.vm, promoted);
    return {};
  });
  await identityStep(ctx, dr, p);
  return { boot: async () => void (await startAndWatch(ctx, dr, p)) };
}

/** Once no new point may begin, a cycle already writing holds the replica lease until it ends. */
async function waitForReplicaIdle(ctx: RunContext, p: Protection): Promise<void> {
  (await ReplicaLease.waitFor(ctx.state, p.name, 'failover', REPLICA_IDLE_TIMEOUT_MS, ctx.signal)).release();
}
