/**
 * GET /metrics in Prometheus's text format. The API server mounts it behind its authentication
 * hook; `guard` says who of the authenticated may read it, throwing the API's refusal otherwise.
 * `tenantOf` scopes a reader to one tenant: it gets only the series labelled with its tenant (its
 * protections' lag, cycles, failovers and drills), never another tenant's nor the process's own.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { principalOf } from '../api/auth.js';

export interface MetricsRouteOptions {
  path?: string;
  guard?: (request: FastifyRequest) => unknown;
  /** The tenant the reader may see; undefined: every series. */
  tenantOf?: (request: FastifyRequest) => string | undefined;
}

export function metricsRoute(app: FastifyInstance, registry: Registry, options: MetricsRouteOptions = {}): void {
  app.get(options.path ?? '/metrics', { schema: { hide: true } }, async (request, reply) => {
    options.guard?.(request);
    const tenant = options.tenantOf?.(request);
    const text = await registry.metrics();
    return reply
      .header('content-type', registry.contentType)
      .header('cache-control', 'no-store')
      .send(tenant === undefined ? text : seriesOfTenant(text, tenant));
  });
}

/** As `vmdr serve` mounts it: an operator's token reads every series, a tenant's its own tenant's only. */
export function daemonMetricsRoute(app: FastifyInstance, registry: Registry): void {
  metricsRoute(app, registry, { tenantOf: (request) => principalOf(request).tenant });
}

/**
 * The exposition text with only the samples whose `tenant` label is `tenant`, each family's HELP and
 * TYPE kept before its first sample kept. Tenant names are letters, digits, ".", "-" and "_" (the
 * config's names): nothing in one needs escaping, and a label value that merely contains the text
 * shows it escaped (`\"`), so it cannot match.
 */
export function seriesOfTenant(text: string, tenant: string): string {
  const label = new RegExp(`[{,]tenant="${tenant.replace(/[.]/g, '\\.')}"[,}]`);
  const kept: string[] = [];
  let header: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('# HELP ')) header = [line];
    else if (line.startsWith('# ')) header.push(line);
    else if (line && label.test(line)) {
      kept.push(...header, line);
      header = [];
    }
  }
  return kept.length ? `${kept.join('\n')}\n` : '';
}
