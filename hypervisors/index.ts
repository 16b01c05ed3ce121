/**
 * Which adapter serves a hypervisor URI, decided by the URI's scheme alone. Adding a hypervisor
 * means adding its schemes here (and its module in load.ts, which the site connections use to load
 * only the adapters their URIs need); nothing else in vmdr chooses between adapters.
 */
import { UnknownHypervisorUri } from './errors.js';
import { LibvirtAdapter } from './libvirt/adapter.js';
import { VsphereAdapter } from './vsphere/adapter.js';
import { hypervisorOf, KNOWN_SCHEMES, KNOWN_URI_PREFIXES, type HypervisorKind } from './schemes.js';
import type { AdapterOptions, HypervisorAdapter } from './types.js';

type AdapterFactory = (uri: string, options: AdapterOptions) => HypervisorAdapter;

const FACTORIES: Record<HypervisorKind, AdapterFactory> = {
  libvirt: (uri, options) => new LibvirtAdapter(uri, options),
  vsphere: (uri, options) => new VsphereAdapter(uri, options),
};

export { KNOWN_SCHEMES };

/** The adapter for `uri`, not yet connected (call connect(), or let the first call connect). */
export function openAdapter(uri: string, options: AdapterOptions = {}): HypervisorAdapter {
  const kind = hypervisorOf(uri);
  if (!kind) throw new UnknownHypervisorUri(uri, KNOWN_URI_PREFIXES);
  return FACTORIES[kind](uri, options);
}
