/**
 * Failback: the way home that keeps what the DR VM did. While the DR VM still runs, its disks
 * are copied back into the source's own disk images, only the blocks that differ (reverse
 * replication). Then, as a planned failover home: the DR VM shuts down, a final pass copies what
 * changed meanwhile, the DR VM's overlays become the replica's newest recovery point (they hold
 * exactly what the source now holds, so forward replication goes on without a copy), the target
 * goes back to being the guarded replica target, and the source starts and must be healthy.
 */
import { basename } from 'node:path';
import type { BootDisk } from '../../hypervisors/types.js';
import { Unsupported, VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { freeLoopbackPort } from '../replication/sender/nbd-port.js';
import { failbackSourceOf } from '../sites/failback-source.js';
import { setPinned } from '../state/points.js';
import { roleOf, setRole } from '../state/roles.js';
import type { HealthStep, PreparedVm } from './boot.js';
import { sourceSiteFor } from '../sites/source-site-for.js';
import { restoreTarget } from './revert.js';
import { DEFAULT_SHUTDOWN_TIMEOUT_MS, drAdapter, replicasOf, taskOf, type RunContext } from './context.js';
import { copyDifferences, type CopyResult } from './copy-differences.js';
import { NotFailedOver } from './errors.js';
import { FailoverJournal } from './journal.js';
import type { ChosenPoint } from './recovery-point.js';


export interface FailbackPreflight {
  failover: string;
}

/** Checked for every VM before anything moves: failed over, and the source is there and off. */
export async function failbackPreflight(ctx: RunContext, p: Protection): Promise<FailbackPreflight> {
  const role = roleOf(ctx.state.db, p.name);
  if (role.role !== 'failed-over' || !role.failover) throw new NotFailedOver(p.name, 'fail back');
  const state = await sourceSiteFor(ctx, p).powerState(p);
  if (state !== 'shutoff') {
    throw new VmdrError('SOURCE_NOT_OFF', `source VM "${p.source.vm}" of protection "${p.name}" is ${state}; failback writes the DR VM's disks into it`, {
      subject: { protection: p.name, vm: p.source.vm },
      remedy: 'stop it first: what it wrote since the failover is overwritten by the DR side',
    });
  }
  if (!(await drAdapter(ctx, p)).changeTracker) throw new Unsupported('failback (it reads the DR VM through a backup export)', ctx.sites.site(p.target.site).uri);
  return { failover: role.failover };
}

/** Everything up to the source's start; its start and health wait, on its own site, are the PreparedVm's boot. */
export async function prepareFailBack(ctx: RunContext, p: Protection, pre: FailbackPreflight): Promise<PreparedVm> {
  const j = ctx.journal;
  const dr = await drAdapter(ctx, p);
  const original = new FailoverJournal(ctx.state, pre.failover);
  const point = original.result<ChosenPoint>(p.name, 'choose-point')!;
  await j.step(p.name, 'reverse-sync', async () => {
    if ((await dr.powerState(p.target.vm)) !== 'running') return { skipped: 'the DR VM is not running' };
    return copyBack(ctx, p);
  });
  await j.step(p.name, 'stop-target', async () => {
    const timeoutMs = ctx.request.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
    await dr.stop(p.target.vm, { mode: 'graceful', timeoutMs, forceOnTimeout: true, signal: ctx.signal });
    return { stoppedAt: new Date().toISOString() };
  });
  await j.step(p.name, 'final-delta', () => copyBack(ctx, p));
  await j.step(p.name, 'adopt-point', async () => {
    // What the DR VM ran on, as the failover recorded it: files beside the point's images.
    const prepared = original.result<{ disks: BootDisk[] }>(p.name, 'prepare-disks');
    if (!prepared) {
      throw new VmdrError('BOOT_DISKS_UNKNOWN', `failover ${pre.failover} of protection "${p.name}" recorded no boot disks: what its DR VM wrote cannot become a recovery point`, {
        subject: { protection: p.name, failover: pre.failover },
      });
    }
    const files = prepared.disks.map((d) => ({ disk: d.target, file: basename(d.path) }));
    const replicas = replicasOf(ctx, p);
    if (replicas.latestPoint(p.name)?.disks.every((d) => files.some((f) => f.file === basename(d.image)))) return { point: replicas.latestPoint(p.name)!.id };
    const adopted = replicas.adoptPoint(p.name, files, { time: new Date(), checkpoint: point.checkpoint }, () => {
      setPinned(ctx.state.db, p.name, Number(point.id.slice(3)), false);
      setRole(ctx.state.db, p.name, 'replicating');
    });
    return { point: adopted.id };
  });
  await j.step(p.name, 'restore-target', async () => {
    await restoreTarget(ctx, p);
    return {};
  });
  // Started and watched by its own site: the start token is written on the host whose hook reads it.
  const source = sourceSiteFor(ctx, p);
  return {
    boot: async () => {
      const { serialFrom } = await j.step(p.name, 'start-source', () => source.startSource(p));
      await j.step<HealthStep>(p.name, 'health', () => source.waitHealthy(p, p.health, serialFrom, ctx.signal));
    },
  };
}

/**
 * One pass: every disk of the DR VM (frozen by a backup job while it runs) into the source's
 * image, through the source site (failback-source.ts). Each disk's stream is committed on its own;
 * a pass cut half way is simply run again (by --resume): it compares every disk anew.
 */
async function copyBack(ctx: RunContext, p: Protection): Promise<CopyResult> {
  const dr = await drAdapter(ctx, p);
  const tracker = dr.changeTracker!;
  // A failback killed inside a pass left its backup job on the DR VM; --resume must not wait on it.
  await tracker.endLeftoverBackup(p.target.vm, { signal: ctx.signal });
  const session = await tracker.beginBackup(p.target.vm, {
    checkpoint: `vmdr-failback-${p.name}-${Date.now()}`,
    listen: { transport: 'tcp', host: '127.0.0.1', port: await freeLoopbackPort() },
  });
  const source = await failbackSourceOf(ctx, p);
  const total: CopyResult = { bytesCompared: 0, bytesDiffering: 0, bytesSent: 0 };
  try {
    for (const exp of session.exports) {
      const pass = await copyDifferences({ listen: exp.listen ?? session.listen, exportName: exp.exportName, checkpoint: session.checkpoint }, source, p, exp.disk, taskOf(ctx, { protection: p.name, vm: p.target.vm }));
      total.bytesCompared += pass.bytesCompared;
      total.bytesDiffering += pass.bytesDiffering;
      total.bytesSent += pass.bytesSent;
    }
  } finally {
    source.close();
    await session.end();
    // The checkpoint was only the job's way in: the DR VM's chain of them is not kept.
    if (!session.offline) await tracker.deleteCheckpoint(p.target.vm, session.checkpoint).catch(() => undefined);
  }
  return total;
}
