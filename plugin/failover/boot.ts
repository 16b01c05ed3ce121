/**
 * The steps every failover kind ends with, on a VM that is defined and off: see that it has its
 * identity, then (once its group is prepared) start it and wait until it is healthy. Shared by the
 * real failover (the pre-staged target) and the drill (a throwaway VM on a bubble network).
 */
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import type { Protection } from '../config/schema.js';
import { serialLog } from '../replication/layout.js';
import { giveIdentity, type AppliedIdentity } from '../targets/identity.js';
import { storageOf, type RunContext } from './context.js';
import { healthSummary, waitUntilHealthy } from './health.js';
import { fileSize } from './serial-health.js';

export interface HealthStep {
  healthyAt: string;
  /** What the guest printed on its console when a serial check matched. */
  guest: string | null;
  checks: { check: string; afterMs: number; detail?: string }[];
}

/**
 * A VM whose steps before its start are done (disks, identity); `boot` starts it and waits until
 * it is healthy. A group prepares all its VMs before it starts any (runner.ts): the starts then go
 * out together, as a person starting the group by hand would send them, and no VM's preparation
 * waits behind the CPU of guests already booting.
 */
export interface PreparedVm {
  boot(): Promise<void>;
}

/**
 * `p` is the protection as this boot sees it: for a drill, its target names the drill VM and
 * its NICs the bubble network.
 */
export async function identityStep(ctx: RunContext, adapter: HypervisorAdapter, p: Protection): Promise<AppliedIdentity> {
  // A pre-staged target has it from provisioning: this only checks, unless the config changed since.
  return ctx.journal.step<AppliedIdentity>(p.name, 'identity', () => giveIdentity(adapter, p));
}

/** Starts `p`'s VM (it has its identity: identityStep) unless a resumed run finds it running, then waits until it is healthy. */
export async function startAndWatch(ctx: RunContext, adapter: HypervisorAdapter, p: Protection, console = serialLog(storageOf(ctx, p), p)): Promise<HealthStep> {
  const vm = p.target.vm;
  const { serialFrom } = await ctx.journal.step(p.name, 'start', async () => {
    const running = (await adapter.powerState(vm)) === 'running';
    // Only what this boot prints counts; a resumed run whose VM already runs reads the whole log.
    const from = running ? 0 : await fileSize(console);
    if (!running) await adapter.start(vm);
    return { serialFrom: from };
  });
  return healthStep(ctx, adapter, p, { serialLog: console, serialFrom });
}

/** Waits until `p`'s health checks pass on `adapter`'s VM (the target, or a drill VM). */
export function healthStep(ctx: RunContext, adapter: HypervisorAdapter, p: Protection, where: { serialLog?: string; serialFrom: number; vm?: string }): Promise<HealthStep> {
  return ctx.journal.step<HealthStep>(p.name, 'health', async () => {
    return healthSummary(await waitUntilHealthy(adapter, where.vm ?? p.target.vm, p.health, { ...where, signal: ctx.signal }));
  });
}
