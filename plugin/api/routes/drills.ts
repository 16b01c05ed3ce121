/**
 * Drills through the API: the configured drills with their next scheduled run, a run started now
 * (a 202 operation like a failover: its events are the test failover's steps, its result the
 * drill's history row and report), and the drill history. A tenant's token sees and runs only its
 * tenant's drills; another tenant's drill or run is answered as one that does not exist.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { NAME_PATTERN, type Drill } from '../../config/schema.js';
import { DrillNotPassed } from '../../drills/errors.js';
import { runDrill, tenantOfDrill } from '../../drills/run.js';
import { nextRunOf, siteOfDrill } from '../../drills/scheduler.js';
import { storedReport } from '../../failover/runner.js';
import { drillRunView, DrillRunView } from '../../drills/view.js';
import { getDrillRun, listDrillRuns, type DrillRunRow } from '../../state/drills.js';
import { mayOperate, principalOf, visible, visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';
import { describeOperationError, OperationAccepted, operationAccepted } from './operations.js';
import { SafeName } from './protections.js';

const DrillView = z.object({
  name: z.string(),
  plan: z.string(),
  tenant: z.string().nullable(),
  schedule: z.string(),
  timezone: z.string(),
  timeLimitMs: z.number(),
  /** The DR site whose daemon runs it on schedule. */
  site: z.string().nullable(),
  nextRun: z.string().nullable(),
});


const HistoryQuery = z.strictObject({
  tenant: z.string().regex(NAME_PATTERN, 'a tenant name').optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});
const HistoryParams = z.strictObject({ id: z.string().regex(/^dr-[0-9A-Za-z-]{1,40}$/, 'a drill run id such as dr-20261201T101010-ab12') });

export function registerDrillRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const tenantOf = (d: Drill) => tenantOfDrill(ctx, d);
  const tenantOfRun = (r: DrillRunRow) => r.tenant ?? undefined;

  api.get('/drills', { schema: { tags: ['drill'], summary: 'The configured drills and when each runs next', response: { 200: z.array(DrillView) } } }, async (req) =>
    visibleOnly(req, ctx.config.drills, tenantOf).map((d) => ({
      name: d.name,
      plan: d.plan,
      tenant: tenantOf(d) ?? null,
      schedule: d.schedule,
      timezone: d.timezone,
      timeLimitMs: d.timeLimit,
      site: siteOfDrill(ctx.config, d) ?? null,
      nextRun: nextRunOf(d)?.toISOString() ?? null,
    })),
  );

  api.post(
    '/drills/:name/runs',
    {
      config: { action: 'drill.run' },
      schema: {
        tags: ['drill'],
        summary: 'Run a drill now: 202 with the operation; its events are the steps, its result the history row and report',
        params: z.strictObject({ name: SafeName }),
        response: { 202: OperationAccepted },
      },
    },
    async (req, reply) => {
      const who = mayOperate(req);
      const drill = visible(req, 'drill', req.params.name, ctx.config.drills.find((d) => d.name === req.params.name), tenantOf);
      const op = ctx.operations.start({
        kind: 'drill',
        subject: { drill: drill.name, plan: drill.plan },
        ...(req.objectTenant ? { tenant: req.objectTenant } : {}),
        startedBy: who.tokenId,
        describeError: (err) => {
          const { report, run } = err as { report?: unknown; run?: unknown };
          return { ...describeOperationError(err), ...(report ? { report } : {}), ...(run ? { run } : {}) };
        },
        work: async ({ signal, onProgress }) => {
          const { run, report } = await runDrill(ctx, drill, 'api', { signal, onProgress });
          const view = drillRunView(run);
          if (run.status !== 'passed') throw Object.assign(new DrillNotPassed(run.drill, run.id, run.status, run.reason), { run: view, ...(report ? { report } : {}) });
          return { run: view, report };
        },
      });
      return reply.code(202).send(operationAccepted(op));
    },
  );

  api.get(
    '/drills/history',
    { schema: { tags: ['drill'], summary: 'Drill runs, newest first', querystring: HistoryQuery, response: { 200: z.array(DrillRunView) } } },
    async (req) => {
      const p = principalOf(req);
      // A tenant's token asking for another tenant's history gets what it may see of it: nothing.
      const tenant = req.query.tenant ?? p.tenant;
      return visibleOnly(req, listDrillRuns(ctx.state.db, { ...(tenant !== undefined ? { tenant } : {}), limit: req.query.limit }), tenantOfRun).map(drillRunView);
    },
  );

  api.get(
    '/drills/history/:id',
    { schema: { tags: ['drill'], summary: "A drill run and its test failover's report", params: HistoryParams } },
    async (req) => {
      const run = visible(req, 'drill', req.params.id, getDrillRun(ctx.state.db, req.params.id), tenantOfRun);
      return { run: drillRunView(run), report: run.failover ? (storedReport(ctx, run.failover) ?? null) : null };
    },
  );
}
