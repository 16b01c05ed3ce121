/**
 * GET /metrics in Prometheus's text format. The API server mounts it behind its authentication
 * hook; `guard` says who of the authenticated may read it (in `vmdr serve`: operators only, since
 * every tenant's protections are in it), throwing the API's refusal otherwise.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';

export function metricsRoute(app: FastifyInstance, registry: Registry, options: { path?: string; guard?: (request: FastifyRequest) => unknown } = {}): void {
  app.get(options.path ?? '/metrics', { schema: { hide: true } }, async (request, reply) => {
    options.guard?.(request);
    const text = await registry.metrics();
    return reply.header('content-type', registry.contentType).header('cache-control', 'no-store').send(text);
  });
}
