/**
 * The source site's endpoint routes for its protections' DR site: the source VM's power state and
 * definition, stop, final sync, fence, start and health wait, and the watch's heartbeat (several of
 * the caller's protections in one request), each run here by LocalSourceSite.
 * Only protections whose source site is this endpoint's site are served, and only to their DR site.
 * A long operation answers NDJSON: a Progress line now and then (the endpoint closes a connection
 * silent for 60 s), then one line {result} or {error}. Health checks are this site's config's own:
 * the caller never picks what the source site probes. Heartbeats share one kept hypervisor
 * connection; the other routes open their own for the operation.
 * Registered by startReceiver: registerSourceSiteRoutes(app, { config, file, site, state, onWarning }).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';
import type { Config, Protection } from '../config/schema.js';
import { errorAnswer, publicError } from '../replication/receiver/answers.js';
import { PROTECTION_UNKNOWN, ReceiverRefused } from '../replication/receiver/errors.js';
import type { StateStore } from '../state/store.js';
import { SiteConnections } from './connections.js';
import { LocalSourceSite } from './local-source.js';
import { registerGroupRoutes } from './group-routes.js';
import { answerStreamed, type AnswerLine } from './ndjson.js';
import { requirePeer } from './peer-auth.js';
import { SOURCE_SITE_HEARTBEAT, SOURCE_SITE_NOTICES, SOURCE_SITE_PREFIX } from './source-site.js';


const StopBody = z.strictObject({
  mode: z.enum(['graceful', 'force']),
  timeoutMs: z.number().int().min(0).max(24 * 3600_000).optional(),
  forceOnTimeout: z.boolean().optional(),
});
const FenceBody = z.strictObject({ failover: z.string().min(1).max(128) });
const HeartbeatBody = z.strictObject({
  protections: z.array(z.strictObject({ name: z.string().min(1).max(128), agent: z.boolean() })).min(1).max(1000),
});
const HealthBody = z.strictObject({ serialFrom: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) });
const NoticesBody = z.strictObject({ protections: z.array(z.string().min(1).max(128)).min(1).max(1000) });

interface Deps {
  config: Config;
  file: string;
  site: string;
  /** None: the endpoint serves no source-site route (a receiver started without a state file). */
  state?: StateStore;
  onWarning?: (err: unknown, context: { protection?: string; correlation?: string }) => void;
}

type Work<T> = (source: LocalSourceSite, tools: { signal: AbortSignal; onProgress: (progress: Progress) => void }) => Promise<T>;

export function registerSourceSiteRoutes(app: FastifyInstance, deps: Deps): void {
  const protectionOf = (req: FastifyRequest<{ Params: { protection: string } }>, name = req.params.protection): Protection => {
    const unknown = () => new ReceiverRefused(PROTECTION_UNKNOWN, `site "${deps.site}" is not the source site of protection "${name}"`, 404, { protection: name });
    const p = deps.state ? deps.config.protections.find((x) => x.name === name && x.source.site === deps.site) : undefined;
    if (!p) throw unknown();
    requirePeer(req, p.target.site, unknown);
    return p;
  };

  /** Runs `work` with this site's own connections, closed when it ends. */
  const withSource = async <T>(p: Protection, work: (source: LocalSourceSite) => Promise<T>): Promise<T> => {
    const sites = new SiteConnections(deps.config, deps.file);
    try {
      return await work(new LocalSourceSite(deps.site, { config: deps.config, file: deps.file, sites, state: deps.state! }));
    } finally {
      await sites.close();
    }
  };

  const streamed = <T>(reply: FastifyReply, p: Protection, op: string, work: Work<T>) => {
    reply.hijack();
    void answerStreamed(reply.raw, {
      waiting: () => ({ phase: 'waiting', done: 0, total: 1, subject: { protection: p.name, vm: p.source.vm }, detail: `source site: ${op}` }),
      gone: () => new VmdrError('CALLER_GONE', `the DR site of protection "${p.name}" closed the connection`),
      errorLine: (err) => errorLine(err, p, deps),
      work: (tools) => withSource(p, (source) => work(source, tools)),
    });
  };

  const route = (method: 'GET' | 'POST', op: string, handler: (req: FastifyRequest<{ Params: { protection: string } }>, reply: FastifyReply) => unknown) =>
    app.route<{ Params: { protection: string } }>({ method, url: `${SOURCE_SITE_PREFIX}/:protection/${op}`, handler });

  // The watch's heartbeat: every protection named must be this site's, watched by the caller. Beats
  // come every second or so: they share one kept hypervisor connection (opened afresh by the next
  // beat when it died), closed with the endpoint.
  const beats = new SiteConnections(deps.config, deps.file);
  app.addHook('onClose', () => beats.close());
  app.post(SOURCE_SITE_HEARTBEAT, async (req) => {
    const { protections } = HeartbeatBody.parse(req.body);
    const asks = protections.map((x) => ({ protection: protectionOf(req as FastifyRequest<{ Params: { protection: string } }>, x.name), agent: x.agent }));
    return new LocalSourceSite(deps.site, { config: deps.config, file: deps.file, sites: beats, state: deps.state! }).heartbeat(asks);
  });
  // The watch's notices: a held answer, a line each time the hypervisor tells something of these
  // protections' sources (over the beats' kept connection), until the caller leaves or the endpoint closes.
  const held = new Set<AbortController>();
  app.addHook('preClose', (done) => {
    for (const h of held) h.abort();
    done();
  });
  app.post(SOURCE_SITE_NOTICES, (req, reply) => {
    const { protections } = NoticesBody.parse(req.body);
    const asked = protections.map((name) => protectionOf(req as FastifyRequest<{ Params: { protection: string } }>, name));
    const closing = new AbortController();
    held.add(closing);
    reply.hijack();
    void answerStreamed(reply.raw, {
      waiting: () => ({ phase: 'waiting', done: 0, total: 1, subject: { protection: asked[0]!.name }, detail: `source site ${deps.site}: notices` }),
      gone: () => new VmdrError('CALLER_GONE', `the DR site watching site "${deps.site}" closed the connection`),
      errorLine: (err) => errorLine(err, asked[0]!, deps),
      work: async ({ signal, onNotice }) => {
        const source = new LocalSourceSite(deps.site, { config: deps.config, file: deps.file, sites: beats, state: deps.state! });
        return { events: await source.notices(asked, onNotice, AbortSignal.any([signal, closing.signal])) };
      },
    }).finally(() => held.delete(closing));
  });
  // A consistency group's members on this site, driven by the group's coordinating site.
  registerGroupRoutes(app, deps);
  route('GET', 'power', async (req) => {
    const p = protectionOf(req);
    return { state: await withSource(p, (s) => s.powerState(p)) };
  });
  route('GET', 'vm', async (req) => {
    const p = protectionOf(req);
    return { vm: await withSource(p, (s) => s.vm(p)) };
  });
  route('POST', 'stop', (req, reply) => {
    const p = protectionOf(req);
    const how = StopBody.parse(req.body);
    streamed(reply, p, 'stop', (s, { signal }) => s.stop(p, how, signal));
  });
  route('POST', 'final-sync', (req, reply) => {
    const p = protectionOf(req);
    streamed(reply, p, 'final-sync', (s, tools) => s.finalSync(p, tools));
  });
  route('POST', 'fence', (req, reply) => {
    const p = protectionOf(req);
    const { failover } = FenceBody.parse(req.body);
    streamed(reply, p, 'fence', (s) => s.fence(p, failover));
  });
  route('POST', 'start', (req, reply) => {
    const p = protectionOf(req);
    streamed(reply, p, 'start', (s) => s.startSource(p));
  });
  route('POST', 'health', (req, reply) => {
    const p = protectionOf(req);
    const { serialFrom } = HealthBody.parse(req.body);
    streamed(reply, p, 'health', (s, { signal }) => s.waitHealthy(p, p.health, serialFrom, signal));
  });
}

/** A VmdrError goes back with its code and subjects (never a file of this host); anything else as internal. */
function errorLine(err: unknown, p: Protection, deps: Deps): AnswerLine {
  if (err instanceof VmdrError) return { error: publicError(err), userError: err.userError };
  const { body, correlation } = errorAnswer(err);
  if (correlation) deps.onWarning?.(err, { protection: p.name, correlation });
  return { error: body.error, userError: false };
}
