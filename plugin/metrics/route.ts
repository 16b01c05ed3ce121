/**
 * GET /metrics in Prometheus's text format. Only the route: the API server mounts it behind its
 * own auth hook, like any other route.
 */
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';

export function metricsRoute(app: FastifyInstance, registry: Registry, path = '/metrics'): void {
  app.get(path, async (_request, reply) => {
    const text = await registry.metrics();
    return reply.header('content-type', registry.contentType).header('cache-control', 'no-store').send(text);
  });
}
