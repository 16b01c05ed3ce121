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

type AdapterClass = (new (uri: string, options: AdapterOptions) => HypervisorAdapter) & {
  /** Starts what the adapter's first call will need (libvirt: a call thread with libvirt loaded). */
  warmUp?: () => void;
};

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

/**
 * Loads the adapter of each URI's hypervisor, and starts what its first call will need, without
 * waiting: a command that will reach these hosts calls this before loading its own modules, so the
 * adapter's set-up overlaps them instead of following them (on a failover, inside its RTO). Only a
 * hint: a URI no adapter takes, or an adapter that cannot load, is left for the real use to report.
 */
export function warmUp(uris: Iterable<string>): void {
  const kinds = new Set([...uris].map(hypervisorOf).filter((k): k is HypervisorKind => k !== undefined));
  for (const kind of kinds) void MODULES[kind]().then((Adapter) => Adapter.warmUp?.(), () => undefined);
}
