/**
 * Who QEMU runs as on a libvirt host: the DAC security model's base label in the host's
 * capabilities (`+64055:+64055`), which follows qemu.conf's `user` and `group`.
 */
import type { ImageUser } from '../types.js';
import type { LibvirtConnection } from './connection.js';
import { at, childElements, firstChild, parseGeneratedXml, textOf } from './xml.js';

/** vmdr's domains are TCG (type='qemu'); a host that only lists kvm runs both as the same user. */
const DOMAIN_TYPES = ['qemu', 'kvm'];

export async function readImageUser(conn: LibvirtConnection): Promise<ImageUser | undefined> {
  return parseImageUser(await conn.call({ operation: 'read host capabilities' }, 'capabilities'));
}

export function parseImageUser(capabilitiesXml: string): ImageUser | undefined {
  const caps = parseGeneratedXml(capabilitiesXml);
  if ('error' in caps) return undefined;
  const host = at(caps, 'host');
  const dac = host && childElements(host, 'secmodel').find((m) => textOf(firstChild(m, 'model')) === 'dac');
  if (!dac) return undefined;
  const labels = childElements(dac, 'baselabel');
  for (const type of DOMAIN_TYPES) {
    const match = /^\+?(\d+):\+?(\d+)$/.exec(textOf(labels.find((l) => l.attrs.type === type))?.trim() ?? '');
    if (match) return { uid: Number(match[1]), gid: Number(match[2]) };
  }
  return undefined;
}
