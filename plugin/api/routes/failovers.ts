/**
 * Failovers through the API, with every option of `vmdr failover` and `vmdr failback`: start one
 * (unplanned, planned, a test, a revert, a failback; of a protection or a plan; from a point or a
 * time; forced; resumed) as a 202 operation whose events are the run's steps and whose result is
 * its report; list the runs; read one run's timeline report from the state file, also while it
 * runs. A tenant's token sees and starts only runs of its own protections and plans.
 */
import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { durationBetween, NAME_PATTERN, type Plan } from '../../config/schema.js';
import { protectionsOfRun, runFailover, storedReport } from '../../failover/runner.js';
import { runReportFiles } from '../../reports/run-report.js';
import { getFailover, listFailovers, type FailoverRow } from '../../state/failovers.js';
import { approveWaiting } from '../../state/approvals.js';
import { NotWaitingForApproval } from '../../runbooks/errors.js';
import { mayOperate, visible, visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';
import { describeOperationError, OperationAccepted, operationAccepted } from './operations.js';
import { SafeName, tenantOfProtection } from './protections.js';

const StartBody = z
  .strictObject({
    kind: z.enum(['unplanned', 'planned', 'test', 'revert', 'failback']).default('unplanned'),
    protection: SafeName.optional().describe('A protection, or its source VM, by name'),
    plan: z.string().regex(NAME_PATTERN, 'a plan name').optional(),
    point: z.string().regex(/^rp-\d{1,12}$/, 'a recovery point id such as rp-12').optional(),
    at: z.iso.datetime({ offset: true }).optional().describe('The newest point at or before this instant'),
    force: z.boolean().default(false).describe('Unplanned while the source runs: power the source off (fence it) first'),
    resume: z.boolean().default(false).describe('Continue the run that stopped half way'),
    shutdownTimeout: durationBetween('1s', '1h').optional().describe('Planned and failback: how long the guest may take to shut down'),
  })
  .superRefine((b, ctx) => {
    if ((b.protection === undefined) === (b.plan === undefined)) ctx.addIssue({ code: 'custom', path: ['protection'], message: 'name a protection or a plan (one of them)' });
    if (b.point && b.at) ctx.addIssue({ code: 'custom', path: ['at'], message: 'point and at exclude each other' });
  });

const RunSummary = z.object({
  id: z.string(),
  kind: z.string(),
  plan: z.string().nullable(),
  protections: z.array(z.string()),
  status: z.enum(['running', 'succeeded', 'failed']),
  startedAt: z.string(),
  endedAt: z.string().nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
});

const RunParams = z.strictObject({ id: z.string().regex(/^fo-[0-9A-Za-z-]{1,40}$/, 'a failover id such as fo-20261201T101010-ab12') });
const ListQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(500).default(50) });

export function registerFailoverRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const tenantOfName = (name: string) => ctx.config.protections.find((p) => p.name === name)?.tenant;
  /** A run is its protections' tenant's (a protection the config no longer has: the operators'). */
  const tenantOfRun = (row: FailoverRow) => {
    const tenants = new Set(protectionsOfRun(row).map(tenantOfName));
    return tenants.size === 1 ? [...tenants][0] : undefined;
  };
  const summary = (row: FailoverRow): z.infer<typeof RunSummary> => ({
    id: row.id,
    kind: row.kind,
    plan: row.plan,
    protections: protectionsOfRun(row),
    status: row.status,
    startedAt: new Date(row.startedAtMs).toISOString(),
    endedAt: row.endedAtMs === null ? null : new Date(row.endedAtMs).toISOString(),
    error: row.errorCode ? { code: row.errorCode, message: row.errorMessage ?? '' } : null,
  });

  /** What the body names, when the caller may see it: the protection by name or source VM, or the plan. */
  const subjectOf = (req: FastifyRequest, body: z.infer<typeof StartBody>): { protection: string } | { plan: string } => {
    if (body.plan !== undefined) {
      const plan = visible(req, 'plan', body.plan, ctx.config.plans.find((p) => p.name === body.plan), (p: Plan) => p.tenant);
      return { plan: plan.name };
    }
    const mine = visibleOnly(req, ctx.config.protections, tenantOfProtection);
    const name = body.protection!;
    const p = visible(req, 'protection', name, mine.find((x) => x.name === name) ?? mine.find((x) => x.source.vm === name), tenantOfProtection);
    return { protection: p.name };
  };

  api.post(
    '/failovers',
    {
      config: { action: 'failover.start' },
      schema: {
        tags: ['failover'],
        summary: 'Start a failover, test, revert or failback: 202 with the operation; its events are the steps, its result the report',
        body: StartBody,
        response: { 202: OperationAccepted },
      },
    },
    async (req, reply) => {
      const who = mayOperate(req);
      const subject = subjectOf(req, req.body);
      const b = req.body;
      const op = ctx.operations.start({
        kind: b.kind === 'failback' ? 'failback' : 'failover',
        subject: { ...subject, kind: b.kind },
        ...(req.objectTenant ? { tenant: req.objectTenant } : {}),
        startedBy: who.tokenId,
        describeError: (err) => {
          const report = (err as { report?: unknown }).report;
          return { ...describeOperationError(err), ...(report ? { report } : {}) };
        },
        work: ({ signal, onProgress }) =>
          runFailover(ctx, {
            kind: b.kind,
            ...('plan' in subject ? { plan: subject.plan } : { vm: subject.protection }),
            ...(b.point ? { point: b.point } : {}),
            ...(b.at ? { at: new Date(b.at) } : {}),
            force: b.force,
            resume: b.resume,
            ...(b.shutdownTimeout !== undefined ? { shutdownTimeoutMs: b.shutdownTimeout } : {}),
            signal,
            onProgress,
          }),
      });
      return reply.code(202).send(operationAccepted(op));
    },
  );

  api.post(
    '/failovers/:id/approve',
    {
      config: { action: 'failover.approve' },
      schema: {
        tags: ['failover'],
        summary: "Approve the runbook step the run waits for (as `vmdr runbook resume RUN`); 409 when it waits for none",
        params: RunParams,
        response: { 200: z.object({ id: z.string(), approved: z.array(z.object({ step: z.string(), by: z.string() })) }) },
      },
    },
    async (req) => {
      const who = mayOperate(req);
      visible(req, 'failover', req.params.id, getFailover(ctx.state.db, req.params.id), tenantOfRun);
      const approved = approveWaiting(ctx.state.db, req.params.id, `token ${who.tokenName}`);
      if (approved.length === 0) throw new NotWaitingForApproval(req.params.id);
      return { id: req.params.id, approved: approved.map((a) => ({ step: a.step, by: a.approvedBy ?? '' })) };
    },
  );

  api.get('/failovers', { schema: { tags: ['failover'], summary: 'Failover runs, newest first', querystring: ListQuery, response: { 200: z.array(RunSummary) } } }, async (req) =>
    visibleOnly(req, listFailovers(ctx.state.db, req.query.limit), tenantOfRun).map(summary),
  );

  api.get(
    '/failovers/:id',
    { schema: { tags: ['failover'], summary: "A run's report: its timeline of steps per VM, RTO, the points booted", params: RunParams } },
    async (req) => {
      visible(req, 'failover', req.params.id, getFailover(ctx.state.db, req.params.id), tenantOfRun);
      return storedReport(ctx, req.params.id);
    },
  );

  api.get(
    '/failovers/:id/report.html',
    { schema: { tags: ['failover'], summary: "A run's signed report as one self-contained HTML page (stored when the run ended)", params: RunParams } },
    async (req, reply) => {
      visible(req, 'failover', req.params.id, getFailover(ctx.state.db, req.params.id), tenantOfRun);
      const files = await runReportFiles(ctx, req.params.id);
      return reply.type('text/html; charset=utf-8').send(await readFile(files.html));
    },
  );
}
