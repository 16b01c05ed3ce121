/**
 * One sync as an operator asks for it (`vmdr sync VM`): the protection by its name or its source
 * VM's, the compression it asked for, a receiver client for the protection's DR site. The same
 * whether the CLI runs it itself or hands it to the host's `vmdr serve` (plugin/control/).
 */
import type { Progress } from '../../hypervisors/types.js';
import type { Config, Protection } from '../config/schema.js';
import { findProtection } from '../protections/find.js';
import type { SiteConnections } from '../sites/connections.js';
import type { StateStore } from '../state/store.js';
import { pauseOf } from '../state/pauses.js';
import { ProtectionPaused } from './errors.js';
import { receiverFor } from './sender/connect.js';
import { syncProtection, type SyncResult } from './sync.js';

export interface SyncRequest {
  /** The protection's name or its source VM's. */
  vm: string;
  full?: boolean;
  compression?: 'auto' | 'off';
}

export interface SyncDeps {
  file: string;
  config: Config;
  sites: SiteConnections;
  state: StateStore;
}

/** The protection asked for, with the compression asked for. */
export function protectionAsAsked(config: Config, file: string, request: SyncRequest): Protection {
  const found = findProtection(config, file, request.vm);
  return request.compression ? { ...found, compression: request.compression } : found;
}

export async function syncAsAsked(deps: SyncDeps, request: SyncRequest, options: { signal?: AbortSignal; onProgress?: (p: Progress) => void } = {}): Promise<SyncResult> {
  const protection = protectionAsAsked(deps.config, deps.file, request);
  const held = pauseOf(deps.state.db, protection.name);
  if (held) throw new ProtectionPaused(protection.name, held.pausedBy, held.pausedAt);
  const receiver = await receiverFor(deps.config, deps.file, protection);
  try {
    return await syncProtection(protection, { sites: deps.sites, state: deps.state, receiver }, { full: request.full ?? false, ...options });
  } finally {
    receiver.close();
  }
}
