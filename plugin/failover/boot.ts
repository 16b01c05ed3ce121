/**
 * The steps every failover kind ends with, on a VM that is defined and off: see that it has its
 * identity, start it, wait until it is healthy. Shared by the real failover (the pre-staged target) and the
 * drill (a throwaway VM on a bubble network).
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
 * `p` is the protection as this boot sees it: for a drill, its target names the drill VM and
 * its NICs the bubble network.
 */
export async function bootWithIdentity(ctx: RunContext, adapter: HypervisorAdapter, p: Protection, console = serialLog(storageOf(ctx, p), p)): Promise<HealthStep> {
  const j = ctx.journal;
  const vm = p.target.vm;
  // A pre-staged target has it from provisioning: this only checks, unless the config changed since.
  await j.step<AppliedIdentity>(p.name, 'identity', () => giveIdentity(adapter, p));
  const { serialFrom } = await j.step(p.name, 'start', async () => {
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
