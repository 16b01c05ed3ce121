/** A drill run as the API answers it and the CLI prints it (times as ISO 8601). */
import { z } from 'zod';
import type { DrillRunRow } from '../state/drills.js';

export const DrillRunView = z.object({
  id: z.string(),
  drill: z.string(),
  plan: z.string(),
  tenant: z.string().nullable(),
  failover: z.string().nullable(),
  trigger: z.enum(['schedule', 'manual', 'api']),
  status: z.enum(['running', 'passed', 'failed', 'skipped', 'interrupted']),
  startedAt: z.string(),
  endedAt: z.string().nullable(),
  reason: z.object({ code: z.string(), message: z.string() }).nullable(),
});
export type DrillRunViewBody = z.infer<typeof DrillRunView>;

export function drillRunView(row: DrillRunRow): DrillRunViewBody {
  return {
    id: row.id,
    drill: row.drill,
    plan: row.plan,
    tenant: row.tenant,
    failover: row.failover,
    trigger: row.trigger,
    status: row.status,
    startedAt: new Date(row.startedAtMs).toISOString(),
    endedAt: row.endedAtMs === null ? null : new Date(row.endedAtMs).toISOString(),
    reason: row.reason,
  };
}
