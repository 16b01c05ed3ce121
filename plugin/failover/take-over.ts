/**
 * A real failover of one VM (unplanned or planned): the pre-staged target takes over from its
 * source. Planned: the source is shut down and a final delta shipped, so nothing is lost.
 * Unplanned: the source is gone (or fenced when forced) and the chosen point is booted. Either way
 * the replica stops taking points (split-brain guard), the point is pinned, the target boots
 * from its own overlay on top of it with the DR identity, and it must come up healthy.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { ReplicaLease } from '../replication/replica/lease.js';
import { receiverFor } from '../replication/sender/connect.js';
import { syncProtection } from '../replication/sync.js';
import { setRole } from '../state/roles.js';
import { LABEL_FAILOVER, LABEL_ROLE, ROLE_PROMOTED, targetLabels } from '../targets/labels.js';
import { bootWithIdentity, type HealthStep } from './boot.js';
import { DEFAULT_SHUTDOWN_TIMEOUT_MS, drAdapter, replicasOf, storageOf, type RunContext } from './context.js';
import { NoRecoveryPoint } from './errors.js';
import { failoverBoot, prepareBootDisks } from './boot-disks.js';
import type { Preflight } from './preflight.js';
import { choosePoint, describePoint, type ChosenPoint } from './recovery-point.js';

/** How long an in-flight sync cycle may take to finish once the replica stopped taking new ones. */
const REPLICA_IDLE_TIMEOUT_MS = 120_000;

export interface TakeOverResult {
  point: ChosenPoint;
  health: HealthStep;
  /** Planned: when the source was down; the final point is younger, so nothing was lost. */
  sourceStoppedAt?: string;
}

export async function takeOver(ctx: RunContext, p: Protection, pre: Preflight): Promise<TakeOverResult> {
  const j = ctx.journal;
  const source = () => ctx.sites.adapter(p.source.site);
  let sourceStoppedAt: string | undefined;
  if (ctx.request.kind === 'planned') {
    ({ sourceStoppedAt } = await j.step(p.name, 'stop-source', async () => {
      const timeoutMs = ctx.request.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
      const adapter = await source();
      const before = await adapter.powerState(p.source.vm);
      if (before !== 'shutoff') await adapter.stop(p.source.vm, { mode: 'graceful', timeoutMs, forceOnTimeout: true, signal: ctx.signal });
      return { sourceStoppedAt: new Date().toISOString(), was: before };
    }));
    await j.step(p.name, 'final-sync', () => finalSync(ctx, p));
  } else if (pre.source === 'running' || pre.source === 'paused') {
    await j.step(p.name, 'fence-source', async () => {
      // Forced by the user: two live copies of one server must never be, so the source goes off.
      await (await source()).stop(p.source.vm, { mode: 'force' });
      return { fencedAt: new Date().toISOString() };
    });
  }

  await j.step(p.name, 'stop-replication', async () => {
    setRole(ctx.state.db, p.name, 'failed-over', { failover: ctx.id });
    await waitForReplicaIdle(ctx, p);
    return {};
  });
  const replicas = replicasOf(ctx, p);
  const point = await j.step(p.name, 'choose-point', async () => {
    const chosen = choosePoint(replicas, p, { point: ctx.request.point, at: ctx.request.at ? new Date(ctx.request.at) : undefined });
    if (sourceStoppedAt && chosen.time.getTime() < Date.parse(sourceStoppedAt)) {
      throw new NoRecoveryPoint(p.name, `has no recovery point taken after its source stopped at ${sourceStoppedAt} (newest: ${chosen.id})`);
    }
    return describePoint(chosen);
  });
  await j.step(p.name, 'pin-point', async () => {
    replicas.pinPoint(p.name, point.id);
    setRole(ctx.state.db, p.name, 'failed-over', { failover: ctx.id, point: point.id });
    return {};
  });
  const dr = await drAdapter(ctx, p);
  await j.step(p.name, 'prepare-disks', async () => {
    const disks = await prepareBootDisks(dr, point, failoverBoot(ctx.id), { storage: storageOf(ctx, p), protection: p.name, vm: p.target.vm });
    return { disks };
  });
  await j.step(p.name, 'promote', async () => {
    await dr.setLabels(p.target.vm, { ...targetLabels(p.name, p.tenant), [LABEL_ROLE]: ROLE_PROMOTED, [LABEL_FAILOVER]: ctx.id });
    return {};
  });
  const health = await bootWithIdentity(ctx, dr, p);
  return { point, health, ...(sourceStoppedAt ? { sourceStoppedAt } : {}) };
}

/**
 * The final delta of a planned failover, from the shut-off source. A cycle the daemon's loop
 * started at the same moment makes the receiver answer "busy": wait for it and try again.
 */
async function finalSync(ctx: RunContext, p: Protection): Promise<{ point: string; kind: string; bytesShipped: number }> {
  const receiver = await receiverFor(ctx.config, ctx.file, p);
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await syncProtection(p, { sites: ctx.sites, state: ctx.state, receiver }, { signal: ctx.signal });
        return { point: result.point.id, kind: result.kind, bytesShipped: result.bytesShipped };
      } catch (err) {
        if (!(err instanceof VmdrError && err.code === 'REPLICA_BUSY') || attempt >= 10) throw err;
        await delay(1000, undefined, { signal: ctx.signal });
      }
    }
  } finally {
    receiver.close();
  }
}

/** Once no new point may begin, a cycle already writing holds the replica lease until it ends. */
async function waitForReplicaIdle(ctx: RunContext, p: Protection): Promise<void> {
  (await ReplicaLease.waitFor(ctx.state, p.name, 'failover', REPLICA_IDLE_TIMEOUT_MS, ctx.signal)).release();
}
