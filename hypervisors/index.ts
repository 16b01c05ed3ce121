/**
 * Which adapter serves a hypervisor URI, decided by the URI's scheme alone. Adding a hypervisor
 * means adding its schemes here; nothing else in vmdr chooses between adapters.
 */
import { UnknownHypervisorUri, Unsupported } from './errors.js';
import { LibvirtAdapter } from './libvirt/adapter.js';
import type { AdapterOptions, HypervisorAdapter } from './types.js';

type AdapterFactory = (uri: string, options: AdapterOptions) => HypervisorAdapter;

const libvirt: AdapterFactory = (uri, options) => new LibvirtAdapter(uri, options);

const vsphere: AdapterFactory = (uri) => {
  throw new Unsupported('talking to vSphere (its adapter comes later; only libvirt URIs work for now)', uri);
};

/** libvirt's own transports for the QEMU driver, plus its in-process test driver. */
const ADAPTERS: ReadonlyMap<string, AdapterFactory> = new Map([
  ['qemu', libvirt],
  ['qemu+unix', libvirt],
  ['qemu+ssh', libvirt],
  ['qemu+libssh', libvirt],
  ['qemu+libssh2', libvirt],
  ['qemu+tcp', libvirt],
  ['qemu+tls', libvirt],
  ['qemu+ext', libvirt],
  ['test', libvirt],
  ['vsphere', vsphere],
]);

export const KNOWN_SCHEMES: readonly string[] = [...ADAPTERS.keys()];

/** The adapter for `uri`, not yet connected (call connect(), or let the first call connect). */
export function openAdapter(uri: string, options: AdapterOptions = {}): HypervisorAdapter {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(uri)?.[1]?.toLowerCase();
  const factory = scheme === undefined ? undefined : ADAPTERS.get(scheme);
  if (!factory) throw new UnknownHypervisorUri(uri, KNOWN_SCHEMES.map((s) => `${s}://`));
  return factory(uri, options);
}
