/**
 * Where vmdr puts what it makes on a vSphere endpoint: the datacenter of the URI, and in it the
 * datastore, resource pool and VM folder the endpoint names (or the defaults VsphereOptions
 * describes), plus the hosts that pool's VMs may run on (an isolated port group must exist on
 * every one of them, or a VM moved by DRS would lose its network). Resolved once, at connect.
 */
import { HypervisorOperationFailed, VmdrError } from '../errors.js';
import type { VsphereEndpoint } from './endpoint.js';
import { datacenter, resolvePath, type Datacenter } from './find.js';
import { retrieve } from './property-collector.js';
import type { VsphereSession } from './session.js';
import { items } from './property-values.js';
import type { MoRef } from './soap.js';

export interface Placement {
  datacenter: Datacenter;
  datastore: { name: string; ref: MoRef };
  pool: MoRef;
  folder: MoRef;
  /** The hosts of the pool's cluster (or the one host of a standalone pool). */
  hosts: MoRef[];
}

/** A missing datastore, pool or folder is a user error: the endpoint's settings name it. */
class PlacementNotFound extends VmdrError {
  constructor(what: string, name: string, uri: string) {
    super('VSPHERE_PLACEMENT_NOT_FOUND', `${what} ${JSON.stringify(name)} does not exist in ${uri}`, {
      subject: { host: uri, [what]: name },
      remedy: `name an existing ${what} in the site's vsphere settings or the URI's query`,
    });
  }
}

export async function resolvePlacement(session: VsphereSession, endpoint: VsphereEndpoint): Promise<Placement> {
  const dc = await datacenter(session, endpoint.datacenter);
  const dcInfo = dc;
  return {
    datacenter: dcInfo,
    datastore: await chooseDatastore(session, dcInfo, endpoint),
    ...(await choosePool(session, dcInfo, endpoint)),
    folder: endpoint.folder ? await byPath(session, endpoint.folder, `/${endpoint.datacenter}/vm`, 'folder', endpoint.uri) : dc.vmFolder,
  };
}

async function chooseDatastore(session: VsphereSession, dc: Placement['datacenter'], endpoint: VsphereEndpoint): Promise<Placement['datastore']> {
  const all = await retrieve(session, { type: 'Datastore', paths: ['name'], container: dc.datastoreFolder });
  const found = endpoint.datastore ? all.find((d) => d.props.name === endpoint.datastore) : all[0];
  if (!found) throw new PlacementNotFound('datastore', endpoint.datastore ?? '(any)', endpoint.uri);
  return { name: String(found.props.name), ref: found.ref };
}

/** A pool given by name is looked up among the datacenter's pools; by path, resolved as typed. */
async function choosePool(session: VsphereSession, dc: Placement['datacenter'], endpoint: VsphereEndpoint): Promise<{ pool: MoRef; hosts: MoRef[] }> {
  let pool: MoRef | undefined;
  if (endpoint.pool?.includes('/')) {
    pool = await byPath(session, endpoint.pool, `/${endpoint.datacenter}/host`, 'pool', endpoint.uri);
  } else {
    const pools = await retrieve(session, { type: 'ResourcePool', paths: ['name', 'parent'], container: dc.hostFolder });
    const found = endpoint.pool ? pools.find((p) => p.props.name === endpoint.pool) : firstRootPool(pools);
    if (!found) throw new PlacementNotFound('pool', endpoint.pool ?? '(any)', endpoint.uri);
    pool = found.ref;
  }
  const [owned] = await retrieve(session, { type: 'ResourcePool', paths: ['owner'], objects: [pool] });
  const owner = owned?.props.owner as MoRef | undefined;
  if (!owner) throw new HypervisorOperationFailed('find the hosts of resource pool', endpoint.uri, `pool ${pool.value} has no owner`);
  const [compute] = await retrieve(session, { type: owner.type, paths: ['host'], objects: [owner] });
  return { pool, hosts: items<MoRef>(compute?.props.host) };
}

/** The datacenter's first cluster's own pool (its parent is the cluster), else a standalone host's. */
function firstRootPool(pools: { ref: MoRef; props: Record<string, unknown> }[]) {
  const parentType = (p: { props: Record<string, unknown> }) => (p.props.parent as MoRef | undefined)?.type;
  return pools.find((p) => parentType(p) === 'ClusterComputeResource') ?? pools.find((p) => parentType(p) === 'ComputeResource');
}

async function byPath(session: VsphereSession, path: string, under: string, what: string, uri: string): Promise<MoRef> {
  const full = path.startsWith('/') ? path : `${under}/${path}`;
  try {
    return await resolvePath(session, full);
  } catch (err) {
    if (err instanceof VmdrError && /NOT_FOUND$/.test(err.code)) throw new PlacementNotFound(what, path, uri);
    throw err;
  }
}
