/**
 * Finding inventory objects the way users name them: a datacenter by name or path, any object by
 * inventory path (`/DC1/vm/web1`, SearchIndex.FindByInventoryPath), a VM by name, instance or BIOS
 * UUID, or inventory path. Names are resolved once, early, into MoRefs.
 */
import { VmNotFound } from '../errors.js';
import { VsphereNameAmbiguous, VsphereObjectNotFound } from './errors.js';
import { retrieve } from './property-collector.js';
import type { VsphereSession } from './session.js';
import type { MoRef } from './soap.js';

export interface Datacenter {
  ref: MoRef;
  name: string;
  vmFolder: MoRef;
  hostFolder: MoRef;
  datastoreFolder: MoRef;
  networkFolder: MoRef;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The datacenter named `name` (a top-level name, or a path through folders: `Europe/DC1`). */
export async function datacenter(session: VsphereSession, name: string): Promise<Datacenter> {
  const ref = await findByInventoryPath(session, name.replace(/^\/+/, ''));
  if (!ref || ref.type !== 'Datacenter') throw new VsphereObjectNotFound('datacenter', name, session.endpoint.host);
  const [found] = await retrieve(session, { type: 'Datacenter', paths: ['name', 'vmFolder', 'hostFolder', 'datastoreFolder', 'networkFolder'], objects: [ref] });
  const props = found?.props ?? {};
  return {
    ref,
    name: String(props.name ?? name),
    vmFolder: props.vmFolder as MoRef,
    hostFolder: props.hostFolder as MoRef,
    datastoreFolder: props.datastoreFolder as MoRef,
    networkFolder: props.networkFolder as MoRef,
  };
}

/** The object at an inventory path (`/DC0/vm/web1`, `/DC0/host/DC0_C0`); VsphereObjectNotFound when nothing is there. */
export async function resolvePath(session: VsphereSession, path: string): Promise<MoRef> {
  const ref = await findByInventoryPath(session, path.replace(/^\/+/, ''));
  if (!ref) throw new VsphereObjectNotFound('path', path, session.endpoint.host);
  return ref;
}

/**
 * The VM `ref` names in `dc`: an inventory path (starting with '/'), an instance UUID or BIOS UUID,
 * or a name (VsphereNameAmbiguous when several VMs in different folders share it). VmNotFound otherwise.
 */
export async function findVm(session: VsphereSession, dc: Datacenter, ref: string): Promise<MoRef> {
  const host = session.endpoint.host;
  if (ref.startsWith('/')) {
    const found = await findByInventoryPath(session, ref.replace(/^\/+/, ''));
    if (found?.type !== 'VirtualMachine') throw new VmNotFound(ref, host);
    return found;
  }
  if (UUID.test(ref)) {
    for (const instanceUuid of [true, false]) {
      const found = await session.call<MoRef | undefined>('FindByUuid', session.content.searchIndex, { datacenter: dc.ref, uuid: ref, vmSearch: true, instanceUuid });
      if (found) return found;
    }
  }
  const named = (await retrieve(session, { type: 'VirtualMachine', paths: ['name'], container: dc.vmFolder })).filter((vm) => vm.props.name === ref);
  if (named.length > 1) throw new VsphereNameAmbiguous('vm', ref, host, named.length);
  if (!named[0]) throw new VmNotFound(ref, host);
  return named[0].ref;
}

async function findByInventoryPath(session: VsphereSession, inventoryPath: string): Promise<MoRef | undefined> {
  return session.call<MoRef | undefined>('FindByInventoryPath', session.content.searchIndex, { inventoryPath });
}
