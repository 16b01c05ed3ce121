/**
 * A consistency group's cycle as an operator asks for it (`vmdr sync --group G`, on the group's
 * coordinating site): the group by name, its members' protections, a receiver client per member
 * of this host (closed after); a member of another source site is checked and shipped there. The group's lock
 * (group-lock.ts) is held for the cycle: while `vmdr serve`'s loop of the group runs a cycle,
 * this one waits for it to end (up to GROUP_WAIT_MS, then GROUP_CYCLE_BUSY), then takes its own.
 */
import type { Progress } from '../../hypervisors/types.js';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { isLocalSite } from '../sites/connections.js';
import { pauseOf } from '../state/pauses.js';
import { ProtectionPaused } from './errors.js';
import { requireCoordinator, syncGroup, type GroupCycleResult } from './group-cycle.js';
import { holdGroupCycle } from './group-lock.js';
import type { SyncDeps } from './sync-request.js';
import { receiverFor } from './sender/connect.js';
import type { ReceiverClient } from './sender/receiver-client.js';

/** How long the CLI waits for another cycle of the group: one takes seconds, its first (every member's full copy) longer. */
const GROUP_WAIT_MS = 10 * 60_000;

export class ConsistencyGroupNotFound extends VmdrError {
  constructor(group: string, file: string, known: string[]) {
    super('CONSISTENCY_GROUP_NOT_FOUND', `no consistency group "${group}" in ${file}${known.length ? `: known groups are ${known.join(', ')}` : ': it has no consistencyGroups'}`, {
      subject: { group, file },
    });
  }
}

export async function syncGroupAsAsked(deps: SyncDeps, name: string, options: { signal?: AbortSignal; onProgress?: (p: Progress) => void } = {}): Promise<GroupCycleResult> {
  const group = deps.config.consistencyGroups.find((g) => g.name === name);
  if (!group) throw new ConsistencyGroupNotFound(name, deps.file, deps.config.consistencyGroups.map((g) => g.name));
  const members = group.protections.map((m) => deps.config.protections.find((p) => p.name === m)!);
  requireCoordinator(group, members, deps.config);
  for (const p of members) {
    const held = pauseOf(deps.state.db, p.name);
    if (held) throw new ProtectionPaused(p.name, held.pausedBy, held.pausedAt);
  }
  options.onProgress?.({ phase: 'waiting', done: 0, total: 1, detail: `consistency group ${group.name}: its lock (another cycle of it may run)` });
  const lock = await holdGroupCycle(deps.state, group.name, { timeoutMs: GROUP_WAIT_MS, ...(options.signal ? { signal: options.signal } : {}) });
  options.onProgress?.({ phase: 'waiting', done: 1, total: 1, detail: `consistency group ${group.name}: its lock` });
  const receivers = new Map<string, ReceiverClient>();
  try {
    // Members on another source site ship from their own host (group-cycle.ts).
    for (const p of members) if (isLocalSite(deps.config, p.source.site)) receivers.set(p.name, await receiverFor(deps.config, deps.file, p));
    return await syncGroup(group, members, { config: deps.config, file: deps.file, sites: deps.sites, state: deps.state, receiverOf: (p: Protection) => receivers.get(p.name)! }, options);
  } finally {
    for (const r of receivers.values()) r.close();
    await lock.release();
  }
}
