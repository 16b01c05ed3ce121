/**
 * Starts the config's API (`api:`) for `vmdr serve`: its certificate made when missing (0600 key in a
 * 0700 directory, beside the state file by default), then the server on the address it names.
 */
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import { ensureIdentity, splitHostPort } from '../sites/identity.js';
import { startApi, type ApiDeps, type ApiServer } from './server.js';

export interface ApiStarted extends ApiServer {
  /** Where its certificate and key are, and whether this start made them. */
  credentials: string;
  madeCredentials: boolean;
}

export function apiCredentialsDir(config: Config): string {
  return config.api?.credentials ?? join(dirname(config.state.path), 'api');
}

export async function startConfiguredApi(deps: Omit<ApiDeps, 'credentials'>): Promise<ApiStarted | undefined> {
  const endpoint = deps.config.api;
  if (!endpoint) return undefined;
  const [host, port] = splitHostPort(endpoint.listen);
  const dir = apiCredentialsDir(deps.config);
  const identity = await ensureIdentity(dir, 'api', [host, ...(endpoint.url ? [new URL(endpoint.url).hostname] : [])]);
  const server = await startApi({ ...deps, credentials: identity }, { host, port });
  return { ...server, credentials: dir, madeCredentials: identity.made };
}
