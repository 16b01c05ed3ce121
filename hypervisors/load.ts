/**
 * The adapter for a URI, loading only that adapter's modules: a libvirt host's failover never
 * loads vSphere's SOAP client (about 120 ms of CPU, which fell inside the failover's RTO: issue 11,
 * docs/benchmarks.md). index.ts's openAdapter loads every adapter up front for callers that need
 * the adapter at once; a URI's kind is told by schemes.ts for both. Adding a hypervisor adds its
 * entry here and in index.ts (the compiler asks for both).
 */
import { UnknownHypervisorUri } from './errors.js';
import { hypervisorOf, KNOWN_URI_PREFIXES, type HypervisorKind } from './schemes.js';
import type { AdapterOptions, HypervisorAdapter } from './types.js';

type AdapterClass = new (uri: string, options: AdapterOptions) => HypervisorAdapter;

const MODULES: Record<HypervisorKind, () => Promise<AdapterClass>> = {
  libvirt: async () => (await import('./libvirt/adapter.js')).LibvirtAdapter,
  vsphere: async () => (await import('./vsphere/adapter.js')).VsphereAdapter,
};

/** The adapter for `uri`, not yet connected; UnknownHypervisorUri for a scheme no adapter takes. */
export async function loadAdapter(uri: string, options: AdapterOptions = {}): Promise<HypervisorAdapter> {
  const kind = hypervisorOf(uri);
  if (!kind) throw new UnknownHypervisorUri(uri, KNOWN_URI_PREFIXES);
  const Adapter = await MODULES[kind]();
  return new Adapter(uri, options);
}
