/**
 * A consistency group's cycle as an operator asks for it (`vmdr sync --group G`, on the group's
 * coordinating site): the group by name, its members' protections, a receiver client per member
 * of this host (closed after); a member of another source site is checked and shipped there.
 */
import type { Progress } from '../../hypervisors/types.js';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Protection } from '../config/schema.js';
import { isLocalSite } from '../sites/connections.js';
import { pauseOf } from '../state/pauses.js';
import { ProtectionPaused } from './errors.js';
import { requireCoordinator, syncGroup, type GroupCycleResult } from './group-cycle.js';
import type { SyncDeps } from './sync-request.js';
import { receiverFor } from './sender/connect.js';
import type { ReceiverClient } from './sender/receiver-client.js';

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
  const receivers = new Map<string, ReceiverClient>();
  try {
    // Members on another source site ship from their own host (group-cycle.ts).
    for (const p of members) if (isLocalSite(deps.config, p.source.site)) receivers.set(p.name, await receiverFor(deps.config, deps.file, p));
    return await syncGroup(group, members, { config: deps.config, file: deps.file, sites: deps.sites, state: deps.state, receiverOf: (p: Protection) => receivers.get(p.name)! }, options);
  } finally {
    for (const r of receivers.values()) r.close();
  }
}
