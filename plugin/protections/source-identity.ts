/**
 * Which VM a protection's source is. The config names it; the DR site records the identity (UUID)
 * of the VM its recovery points are of. A VM under that name with another UUID is another machine
 * and is refused. A name that is gone while the recorded UUID still exists is the same machine
 * renamed: it is followed, with a warning, so replication goes on until the config is updated.
 */
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { VmdrError } from '../../hypervisors/errors.js';
import type { ReceiverClient } from '../replication/sender/receiver-client.js';
import { SourceIdentityChanged } from './errors.js';

export interface RecordedSource {
  uuid: string;
  /** Its name when recorded. */
  vm: string;
  recordedAt: string;
}

export interface ResolvedSource {
  /** The name to drive the VM by now. */
  vm: string;
  uuid: string;
  /** Set when the config's name is gone and the recorded VM was found under this other name. */
  renamed?: { from: string; to: string };
}

/**
 * Resolves the source VM of `protection`, named `vm` in the config, against the identity recorded
 * for it (none: whatever VM has the name). Throws SourceIdentityChanged for another machine under
 * the name, and the adapter's VM_NOT_FOUND when neither the name nor the recorded UUID exists.
 */
export async function resolveSource(adapter: Pick<HypervisorAdapter, 'getVm'>, protection: string, vm: string, recorded: Pick<RecordedSource, 'uuid'> | undefined): Promise<ResolvedSource> {
  const named = await adapter.getVm(vm).catch((err: unknown) => {
    if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND' && recorded) return err;
    throw err;
  });
  if (!(named instanceof VmdrError)) {
    if (recorded && named.id !== recorded.uuid) throw new SourceIdentityChanged(protection, vm, recorded.uuid, named.id);
    return { vm: named.name, uuid: named.id };
  }
  const byUuid = await adapter.getVm(recorded!.uuid).catch((err: unknown) => {
    if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') throw named;
    throw err;
  });
  // getVm falls back to names: a VM *named* like the UUID is not the recorded one.
  if (byUuid.id !== recorded!.uuid) throw named;
  return { vm: byUuid.name, uuid: byUuid.id, renamed: { from: vm, to: byUuid.name } };
}

export function renamedWarning(protection: string, r: ResolvedSource): string | undefined {
  if (!r.renamed) return undefined;
  return `source VM "${r.renamed.from}" of protection "${protection}" is gone; the same VM (UUID ${r.uuid}) is now named "${r.renamed.to}" and was synced: update the config`;
}

/**
 * What a sync does before it captures anything: resolve the source against the DR site's record,
 * and adopt the VM found when there is no record yet (a protection made before identities were
 * recorded). Returns the VM to drive and what to tell the operator.
 */
export async function checkSource(
  adapter: HypervisorAdapter,
  protection: { name: string; source: { vm: string } },
  receiver: Pick<ReceiverClient, 'recordedSource' | 'recordSource'>,
): Promise<{ source: ResolvedSource; notes: string[] }> {
  const recorded = await receiver.recordedSource(protection.name);
  const source = await resolveSource(adapter, protection.name, protection.source.vm, recorded);
  const notes: string[] = [];
  if (!recorded) {
    const r = await receiver.recordSource(protection.name, { uuid: source.uuid, vm: source.vm });
    // Another host recorded a different VM in between.
    if (r.outcome === 'conflict') throw new SourceIdentityChanged(protection.name, source.vm, r.source.uuid, source.uuid);
    notes.push(
      `recorded the identity of source VM "${source.vm}": UUID ${source.uuid} (none was recorded); a sync of another VM under this name will be refused`,
    );
  }
  const renamed = renamedWarning(protection.name, source);
  if (renamed) notes.push(renamed);
  return { source, notes };
}
