/**
 * What `vmdr status` reports for each protection: where its source and target VMs are and what
 * power state they are in, its newest recovery point and the lag behind the source (now minus the
 * instant that point is the state of), and its last sync. A site that cannot be reached is reported
 * per row, not thrown: status is what an operator runs when things are already broken. Recovery
 * points come from this host's state file where the DR storage is, else from the site's receiver;
 * a receiver that cannot be reached is a per-row problem too. The last sync is this host's history.
 */
import type { PowerState } from '../../hypervisors/types.js';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config, Protection } from '../config/schema.js';
import type { RecoveryPoint } from '../replication/replica/store.js';
import type { SiteConnections } from '../sites/connections.js';
import { listRecoveryPoints } from '../replication/points.js';
import type { StateStore } from '../state/store.js';
import { lastSyncRuns } from '../state/sync-runs.js';

export interface VmState {
  site: string;
  vm: string;
  state: PowerState | 'missing' | 'unreachable';
  problem?: string;
}

export interface ProtectionStatus {
  protection: string;
  tenant: string | null;
  rpoSeconds: number;
  source: VmState;
  target: VmState;
  lastPoint: { id: string; time: string } | null;
  /** Why the newest point could not be known (receiver unreachable, no storage configured). */
  pointsProblem: string | null;
  /** Seconds since the instant of the newest recovery point; null before the first one. */
  lagSeconds: number | null;
  /** True when the lag is past the RPO. */
  rpoBreached: boolean;
  lastSync: { outcome: string; kind: string; startedAt: string; endedAt: string | null; error: string | null } | null;
}

export async function protectionStatus(
  ctx: { config: Config; file: string; sites: SiteConnections; state: StateStore },
  now = new Date(),
): Promise<ProtectionStatus[]> {
  const { config, sites, state } = ctx;
  return Promise.all(
    config.protections.map(async (p) => {
      const { point: latest, problem } = await newestPoint(ctx, p);
      const lag = latest ? Math.max(0, (now.getTime() - latest.time.getTime()) / 1000) : null;
      const run = lastSyncRuns(state, p.name, 1)[0];
      return {
        protection: p.name,
        tenant: p.tenant ?? null,
        rpoSeconds: p.rpo / 1000,
        source: await vmState(sites, p.source.site, p.source.vm),
        target: await vmState(sites, p.target.site, p.target.vm),
        lastPoint: latest ? { id: latest.id, time: latest.time.toISOString() } : null,
        pointsProblem: problem ?? null,
        lagSeconds: lag,
        rpoBreached: lag === null || lag * 1000 > p.rpo,
        lastSync: run
          ? {
              outcome: run.outcome,
              kind: run.kind,
              startedAt: run.startedAt.toISOString(),
              endedAt: run.endedAt?.toISOString() ?? null,
              error: run.error ? `${run.error.code}: ${run.error.message}` : null,
            }
          : null,
      };
    }),
  );
}

async function vmState(sites: SiteConnections, site: string, vm: string): Promise<VmState> {
  try {
    const adapter = await sites.adapter(site);
    return { site, vm, state: (await adapter.getVm(vm)).powerState };
  } catch (err) {
    if (!(err instanceof VmdrError)) throw err;
    if (err.code === 'VM_NOT_FOUND') return { site, vm, state: 'missing' };
    if (err.code === 'HYPERVISOR_UNREACHABLE') return { site, vm, state: 'unreachable', problem: err.message };
    throw err;
  }
}

/** The newest point, or why it cannot be known (no storage configured, receiver unreachable). */
async function newestPoint(ctx: Parameters<typeof listRecoveryPoints>[0], p: Protection): Promise<{ point?: RecoveryPoint; problem?: string }> {
  try {
    return { point: (await listRecoveryPoints(ctx, p)).at(-1) };
  } catch (err) {
    if (err instanceof VmdrError) return { problem: err.message };
    throw err;
  }
}
