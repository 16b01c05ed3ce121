/** A protection's recovery points, wherever this runs (see dr-site.ts). */
import type { Protection } from '../config/schema.js';
import { atDrSite, type DrContext } from './dr-site.js';
import { ReplicaStore, type RecoveryPoint } from './replica/store.js';

export function listRecoveryPoints(ctx: DrContext, protection: Protection): Promise<RecoveryPoint[]> {
  return atDrSite(
    ctx,
    protection,
    (storage, state) => new ReplicaStore(storage, state, { config: ctx.config }).listPoints(protection.name),
    (receiver) => receiver.listPoints(protection.name),
  );
}
