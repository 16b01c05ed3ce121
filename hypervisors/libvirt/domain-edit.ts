/**
 * Changes to a VM's persistent definition (the XML libvirt boots it from next time): a NIC's
 * identity, its disks' images, an added disk and the identity seed disk. Each works on the parsed XML and leaves redefining to the
 * caller, so a failure part way changes nothing in libvirt.
 */
import { DiskNotFound, HypervisorOperationFailed, InvalidNicIdentity, NicNotFound } from '../errors.js';
import type { DiskSpec, NicIdentity } from '../types.js';
import { diskElement, isSeedDisk, SEED_SERIAL, nextTarget } from './domain-xml.js';
import { childElements, element, ensureChild, firstChild, removeChild, textElement, type XmlElement } from './xml.js';

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export interface EditTarget {
  vm: string;
  host: string;
}

export function setNicIdentityInXml(domain: XmlElement, at: EditTarget, nicMac: string, identity: NicIdentity): void {
  const mac = nicMac.toLowerCase();
  const interfaces = childElements(ensureChild(domain, 'devices'), 'interface');
  const macOf = (nic: XmlElement) => firstChild(nic, 'mac')?.attrs.address?.toLowerCase();
  const matching = interfaces.filter((nic) => macOf(nic) === mac);
  if (matching.length === 0) throw new NicNotFound(at.vm, at.host, mac);
  if (matching.length > 1) {
    throw new InvalidNicIdentity(at.vm, at.host, mac, `${matching.length} NICs have this MAC, so vmdr cannot tell which one to change; give them distinct MACs first`);
  }
  const nic = matching[0]!;

  if (identity.mac !== undefined) {
    const wanted = identity.mac.toLowerCase();
    if (!MAC.test(wanted)) throw new InvalidNicIdentity(at.vm, at.host, mac, `new MAC ${JSON.stringify(identity.mac)} is not of the form 52:54:00:xx:xx:xx`);
    // The least significant bit of the first octet marks a multicast address: no NIC may have one.
    if (parseInt(wanted.slice(0, 2), 16) & 1) throw new InvalidNicIdentity(at.vm, at.host, mac, `new MAC ${wanted} is a multicast address`);
    if (interfaces.some((other) => other !== nic && macOf(other) === wanted)) {
      throw new InvalidNicIdentity(at.vm, at.host, mac, `another NIC of this VM already has MAC ${wanted}`);
    }
    const macEl = firstChild(nic, 'mac');
    if (macEl) macEl.attrs.address = wanted;
    else nic.children.unshift(element('mac', { address: wanted }));
  }

  if (identity.network !== undefined) {
    nic.attrs.type = 'network';
    // Attributes of the old attachment (bridge, portgroup, portid) belong to the old network.
    const source = element('source', { network: identity.network });
    const old = firstChild(nic, 'source');
    if (old) nic.children[nic.children.indexOf(old)] = source;
    else nic.children.push(source);
    // A virtualport or vlan tag of the old network makes no sense on the new one.
    for (const stale of ['virtualport', 'vlan', 'target']) {
      const el = firstChild(nic, stale);
      if (el) removeChild(nic, el);
    }
  }
}

/** Points each named disk at its new image; throws when the domain has no disk of that target. */
export function setDiskImagesInXml(domain: XmlElement, at: EditTarget, disks: { target: string; path: string; format: string }[]): void {
  const existing = childElements(ensureChild(domain, 'devices'), 'disk');
  for (const wanted of disks) {
    const disk = existing.find((d) => firstChild(d, 'target')?.attrs.dev === wanted.target && !isSeedDisk(d));
    if (!disk) throw new DiskNotFound(at.vm, at.host, wanted.target);
    const source = firstChild(disk, 'source');
    if (source) source.attrs.file = wanted.path;
    else disk.children.push(element('source', { file: wanted.path }));
    const driver = firstChild(disk, 'driver');
    if (driver) driver.attrs.type = wanted.format;
    else disk.children.unshift(element('driver', { name: 'qemu', type: wanted.format }));
    // A backing chain libvirt recorded for the old image does not describe the new one.
    const backing = firstChild(disk, 'backingStore');
    if (backing) removeChild(disk, backing);
  }
}

/** Adds `disk` after the VM's disks (libvirt keeps them in its own order of bus and target). */
export function addDiskToXml(domain: XmlElement, at: EditTarget, disk: DiskSpec & { target: string }): void {
  const devices = ensureChild(domain, 'devices');
  const disks = childElements(devices, 'disk');
  const used = new Set(disks.map((d) => firstChild(d, 'target')?.attrs.dev ?? ''));
  if (used.has(disk.target)) throw new HypervisorOperationFailed('add disk', at.host, `it already has a disk ${disk.target}`, { vm: at.vm });
  const last = disks.at(-1);
  devices.children.splice(last ? devices.children.indexOf(last) + 1 : devices.children.length, 0, diskElement(disk, used, 'ide'));
}

/** Points the existing seed disk at `isoPath`, or adds one as the last virtio disk. */
export function setSeedDiskInXml(domain: XmlElement, isoPath: string): void {
  const devices = ensureChild(domain, 'devices');
  const disks = childElements(devices, 'disk');
  const existing = disks.find(isSeedDisk);
  if (existing) {
    const source = firstChild(existing, 'source');
    if (source) source.attrs.file = isoPath;
    else existing.children.push(element('source', { file: isoPath }));
    return;
  }
  const used = new Set(disks.map((d) => firstChild(d, 'target')?.attrs.dev ?? ''));
  // A readonly raw virtio disk rather than a cdrom: virtio has no ejectable media, and the guest
  // needs no extra drivers to read it (it mounts /dev/vdX as iso9660).
  const seed = diskElement(
    { path: isoPath, format: 'raw', target: nextTarget('vd', used), readonly: true },
    used,
    'ide',
    [textElement('serial', SEED_SERIAL)],
  );
  const lastDisk = disks.at(-1);
  devices.children.splice(lastDisk ? devices.children.indexOf(lastDisk) + 1 : devices.children.length, 0, seed);
}

/** Returns false when there was no seed to remove. */
export function removeSeedDiskFromXml(domain: XmlElement): boolean {
  const devices = firstChild(domain, 'devices');
  const seed = devices && childElements(devices, 'disk').find(isSeedDisk);
  if (!devices || !seed) return false;
  removeChild(devices, seed);
  return true;
}
