/**
 * The steps of a runbook that touch VMs, done the runner's way: a `start` is the runner's own
 * group start (recorded as `group NAME`, as a plan without a runbook records it); `wait-health`
 * runs the VMs' health checks again; scripts run for a VM learn what that VM became on the DR site.
 */
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { serialLog } from '../replication/layout.js';
import type { RunbookActions } from '../runbooks/execute.js';
import { configFacts, type VmFacts } from '../runbooks/facts.js';
import { drAdapter, storageOf, type RunContext } from './context.js';
import { drillNames } from './drill.js';
import { healthSummary, waitUntilHealthy } from './health.js';
import type { ChosenPoint } from './recovery-point.js';

export interface RunbookGroup {
  name: string;
  protections: Protection[];
}

export function runbookActions<G extends RunbookGroup>(ctx: RunContext, groups: G[], startGroup: (group: G, signal: AbortSignal | undefined) => Promise<unknown>): RunbookActions {
  const group = (name: string) => groups.find((g) => g.name === name)!;
  /** The DR VM and console of `p` in this run: a drill's own VM, or the target. */
  const where = (p: Protection) =>
    ctx.request.kind === 'test' ? { vm: drillNames(ctx, p).vm, console: drillNames(ctx, p).console } : { vm: p.target.vm, console: serialLog(storageOf(ctx, p), p) };
  return {
    startGroup: (name, signal) => startGroup(group(name), signal),
    waitHealth: async (name, signal) => {
      const vms = await Promise.all(
        group(name).protections.map(async (p) => {
          const { vm, console } = where(p);
          // The console from its start: a guest that said it was up stays up unless a check now fails.
          const report = await waitUntilHealthy(await drAdapter(ctx, p), vm, p.health, { serialLog: console, serialFrom: 0, ...(signal ? { signal } : {}) });
          return { vm, ...healthSummary(report) };
        }),
      );
      return { vms };
    },
    vmsOf: async (name) =>
      Promise.all(
        group(name).protections.map(async (p): Promise<VmFacts> => {
          const { vm } = where(p);
          const facts = configFacts(p, name, vm);
          const point = ctx.journal.result<ChosenPoint>(p.name, 'choose-point');
          // The MACs the VM has (the hypervisor chose those the config leaves out).
          const info = await (await drAdapter(ctx, p)).getVm(vm).catch((err: unknown) => {
            if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return undefined;
            throw err;
          });
          return { ...facts, ...(info ? { macs: info.nics.map((n) => n.mac) } : {}), ...(point ? { point: { id: point.id, time: point.time } } : {}) };
        }),
      ),
  };
}
