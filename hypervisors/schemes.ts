/**
 * Which hypervisor a URI names, by its scheme alone: what index.ts opens an adapter for, and what
 * the config checks before anything is opened (`vmdr config check` refuses a scheme no adapter
 * takes). Apart from index.ts so that checking a config loads no adapter.
 */
export type HypervisorKind = 'libvirt' | 'vsphere';

/** libvirt's own transports for the QEMU driver, plus its in-process test driver; and vSphere. */
export const SCHEMES: ReadonlyMap<string, HypervisorKind> = new Map([
  ['qemu', 'libvirt'],
  ['qemu+unix', 'libvirt'],
  ['qemu+ssh', 'libvirt'],
  ['qemu+libssh', 'libvirt'],
  ['qemu+libssh2', 'libvirt'],
  ['qemu+tcp', 'libvirt'],
  ['qemu+tls', 'libvirt'],
  ['qemu+ext', 'libvirt'],
  ['test', 'libvirt'],
  ['vsphere', 'vsphere'],
]);

export const KNOWN_SCHEMES: readonly string[] = [...SCHEMES.keys()];

/** The hypervisor `uri` names, or undefined for a scheme no adapter takes. */
export function hypervisorOf(uri: string): HypervisorKind | undefined {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(uri)?.[1]?.toLowerCase();
  return scheme === undefined ? undefined : SCHEMES.get(scheme);
}

/** What an unknown URI's error lists. */
export const KNOWN_URI_PREFIXES: readonly string[] = KNOWN_SCHEMES.map((s) => `${s}://`);
