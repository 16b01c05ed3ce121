/**
 * `vmdr status` through the API: every protection the token may see, as `vmdr status --json` shows
 * it, from a look at most a couple of seconds old (status-cache.ts), and when that look was taken.
 *
 * The answer is made once per look and audience (the operators, or one tenant) and sent as those
 * bytes to every reader until the next look: a portal polling for each of a provider's customers
 * costs a lookup and a socket write, not a serialization of every row. The schema documents the
 * answer (OpenAPI); rows are built by status.ts, so nothing is checked against it per request.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { groupsOf, type ProtectionStatus } from '../../protections/status.js';
import { sendJson } from '../answers.js';
import { principalOf, visibleOnly } from '../auth.js';
import type { ApiContext } from '../server.js';

/** The answers made from one look, by audience: '' for operators, else the tenant's name. */
const answersOfLook = new WeakMap<ProtectionStatus[], Map<string, Buffer>>();

/**
 * A problem's words can name files of the daemon's host (the config, a replica): a tenant is told
 * the problem, not where the provider keeps things. Absolute paths (two parts or more) inside JSON
 * strings are replaced.
 */
const HOST_PATH = /(?<![\w.:/<-])(?:\/[\w.@+-]+){2,}/g;

export function withoutHostPaths(json: string): string {
  return json.replace(/"(?:[^"\\]|\\.)*"/g, (s) => s.replace(HOST_PATH, '(a path of the DR host)'));
}

export function registerStatusRoutes(app: FastifyInstance, ctx: ApiContext): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/status',
    {
      schema: {
        tags: ['status'],
        summary: 'Every protection the token may see: its VMs, role, newest recovery point, lag against its RPO, last sync, drift; and their consistency groups',
        response: {
          200: z.object({
            takenAt: z.string(),
            protections: z.array(z.looseObject({ protection: z.string(), tenant: z.string().nullable() })),
            /** The consistency groups of the protections shown (each member row's `consistencyGroup`, once per group). */
            groups: z.array(z.looseObject({ group: z.string(), members: z.array(z.string()) })),
          }),
        },
      },
    },
    async (req, reply) => {
      const { rows, takenAt } = await ctx.status.read();
      const audience = principalOf(req).tenant ?? '';
      let answers = answersOfLook.get(rows);
      if (!answers) answersOfLook.set(rows, (answers = new Map()));
      let body = answers.get(audience);
      if (!body) {
        // Rows are what `vmdr status --json` prints: the schema documents their key, not every field.
        const protections = visibleOnly(req, rows, (r) => r.tenant ?? undefined);
        const text = JSON.stringify({ takenAt: takenAt.toISOString(), protections, groups: groupsOf(protections) });
        answers.set(audience, (body = Buffer.from(audience === '' ? text : withoutHostPaths(text))));
      }
      return sendJson(reply, body);
    },
  );
}
