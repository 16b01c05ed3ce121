/**
 * The DR site's record of a protection's source VM and of the points kept for a replaced one,
 * wherever this runs (see replication/dr-site.ts), as for the points themselves.
 */
import type { Protection } from '../config/schema.js';
import { atDrSite, type DrContext } from '../replication/dr-site.js';
import { ReplicaStore } from '../replication/replica/store.js';
import { recordedSource, releaseKeptPoints, type SourceRow } from '../state/sources.js';
import type { RecordedSource } from './source-identity.js';

export function toRecordedSource(row: SourceRow): RecordedSource {
  return { uuid: row.vmUuid, vm: row.vmName, recordedAt: new Date(row.recordedAtMs).toISOString() };
}

/**
 * Releases points kept for a replaced source: `'replaced'` all of them, else the ids given. An id
 * the protection does not have is an error; one that is not kept is simply not in the answer.
 */
export function releaseKept(replicas: ReplicaStore, protection: string, which: string[] | 'replaced'): string[] {
  const seqs = which === 'replaced' ? ('all' as const) : which.map((id) => replicas.getPoint(protection, id).seq);
  return releaseKeptPoints(replicas.state.db, protection, seqs).map((seq) => `rp-${seq}`);
}

export function recordedSourceOf(ctx: DrContext, protection: Protection): Promise<RecordedSource | undefined> {
  return atDrSite(
    ctx,
    protection,
    (_storage, state) => {
      const row = recordedSource(state.db, protection.name);
      return row && toRecordedSource(row);
    },
    (r) => r.recordedSource(protection.name),
  );
}

export function releasePoints(ctx: DrContext, protection: Protection, which: string[] | 'replaced'): Promise<string[]> {
  return atDrSite(ctx, protection, (storage, state) => releaseKept(new ReplicaStore(storage, state, { config: ctx.config }), protection.name, which), (r) => r.releasePoints(protection.name, which));
}
