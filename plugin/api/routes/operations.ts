/**
 * The operations the API started: poll one (`GET /operations/ID`), or follow it as server-sent
 * events (`GET /operations/ID/events`): the events kept so far, then each as it comes, the last one
 * `succeeded` or `failed`, then the stream ends. The progress events are the ones the CLI draws.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { VmdrError } from '../../../hypervisors/errors.js';
import { principalOf, visible, visibleOnly } from '../auth.js';
import type { Operation, OperationError, OperationEvent } from '../operations.js';
import { API_PREFIX, type ApiContext } from '../server.js';

export const OperationAccepted = z.object({
  id: z.string(),
  kind: z.string(),
  state: z.enum(['running', 'succeeded', 'failed']),
  subject: z.record(z.string(), z.string()),
  /** Where to poll it, and where to follow its events. */
  links: z.object({ self: z.string(), events: z.string() }),
});

/** What a route that starts an operation answers (202). */
export type OperationAcceptedBody = z.infer<typeof OperationAccepted>;

const OperationView = OperationAccepted.extend({
  tenant: z.string().nullable(),
  startedAt: z.string(),
  endedAt: z.string().nullable(),
  result: z.unknown().optional(),
  error: z.object({ code: z.string(), message: z.string() }).passthrough().optional(),
  eventsDropped: z.number(),
  events: z.array(z.unknown()),
});

const IdParams = z.strictObject({ id: z.string().min(1).max(64) });

const links = (op: Operation) => ({ self: `${API_PREFIX}/operations/${op.id}`, events: `${API_PREFIX}/operations/${op.id}/events` });

export function operationAccepted(op: Operation): OperationAcceptedBody {
  return { id: op.id, kind: op.kind, state: op.state, subject: op.subject, links: links(op) };
}

function operationView(op: Operation): z.infer<typeof OperationView> {
  return {
    ...operationAccepted(op),
    tenant: op.tenant ?? null,
    startedAt: op.startedAt,
    endedAt: op.endedAt ?? null,
    ...(op.state === 'succeeded' ? { result: op.result } : {}),
    ...(op.error ? { error: op.error } : {}),
    eventsDropped: op.eventsDropped,
    events: op.events,
  };
}

/** A failure as the caller of the operation may see it: a VmdrError by its code and names; anything else without this host's detail. */
export function describeOperationError(err: unknown): OperationError {
  if (err instanceof VmdrError) {
    const { file: _file, path: _path, ...subject } = err.subject;
    return { code: err.code, message: err.message, ...subject, ...(err.remedy ? { remedy: err.remedy } : {}) };
  }
  return { code: 'INTERNAL', message: 'internal error: see the daemon\'s log' };
}

/** Between events, a comment now and then keeps proxies and idle timers from cutting the stream. */
const HEARTBEAT_MS = 15_000;

export function registerOperationRoutes(app: FastifyInstance, ctx: ApiContext): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  const find = (req: Parameters<typeof visible>[0], id: string) => visible(req, 'operation', id, ctx.operations.get(id), (op) => op.tenant);

  api.get('/operations', { schema: { tags: ['operations'], summary: 'The operations the daemon remembers, oldest first', response: { 200: z.array(OperationAccepted) } } }, async (req) =>
    visibleOnly(req, ctx.operations.list(), (op) => op.tenant).map(operationAccepted),
  );

  api.get('/operations/:id', { schema: { tags: ['operations'], params: IdParams, response: { 200: OperationView } } }, async (req) => operationView(find(req, req.params.id)));

  api.get(
    '/operations/:id/events',
    {
      schema: {
        tags: ['operations'],
        summary: "The operation's events as server-sent events (text/event-stream): progress, then succeeded or failed",
        params: IdParams,
      },
    },
    async (req, reply) => {
      principalOf(req);
      const op = find(req, req.params.id);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-request-id': req.id });
      const send = (e: OperationEvent) => res.write(`event: ${e.event}\ndata: ${JSON.stringify(e)}\n\n`);
      for (const e of op.events) send(e);
      const stop = ctx.operations.subscribe(op.id, (e) => {
        send(e);
        if (e.event !== 'progress') finish();
      });
      if (!stop) return void res.end();
      const heartbeat = setInterval(() => res.write(': still running\n\n'), HEARTBEAT_MS);
      const finish = () => {
        clearInterval(heartbeat);
        stop();
        res.end();
      };
      res.once('close', finish);
    },
  );
}
