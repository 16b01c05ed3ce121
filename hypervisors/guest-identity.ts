/**
 * What every adapter checks in a guest identity before it changes anything: the values end up in
 * the guest's own configuration (a NoCloud seed, a vSphere customization spec), where a malformed
 * one would only show as a guest that came up without its address.
 */
import { IdentityInvalid } from './errors.js';
import type { GuestIdentity } from './types.js';

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const IPV4 = /^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$/;
const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
const INSTANCE_ID = /^[\w.:-]{1,128}$/;
/** More than a guest has slots for, and enough to keep a hostile identity from growing a seed. */
const MAX_NICS = 32;
const MAX_ADDRESSES = 64;

/** Throws IdentityInvalid naming the first value that is wrong; MACs are compared lower-case. */
export function checkGuestIdentity(vm: string, identity: GuestIdentity): void {
  if (!HOSTNAME.test(identity.hostname)) throw new IdentityInvalid(vm, 'hostname', identity.hostname, 'a hostname');
  if (!INSTANCE_ID.test(identity.instanceId)) throw new IdentityInvalid(vm, 'instance id', identity.instanceId, 'an instance id');
  if (identity.nics.length > MAX_NICS) throw new IdentityInvalid(vm, 'nics', `${identity.nics.length} NICs`, `at most ${MAX_NICS} NICs`);
  identity.nics.forEach((nic, i) => {
    if (nic.mac !== undefined && !MAC.test(nic.mac.toLowerCase())) throw new IdentityInvalid(vm, `nics[${i}].mac`, nic.mac, 'a MAC address');
    if (nic.addresses.length + (nic.dns?.length ?? 0) > MAX_ADDRESSES) {
      throw new IdentityInvalid(vm, `nics[${i}].addresses`, `${nic.addresses.length} addresses`, `at most ${MAX_ADDRESSES} addresses and DNS servers`);
    }
    for (const a of nic.addresses) {
      const [ip, prefix, extra] = a.split('/');
      if (extra !== undefined || !IPV4.test(ip ?? '') || !/^\d{1,2}$/.test(prefix ?? '') || Number(prefix) > 32) {
        throw new IdentityInvalid(vm, `nics[${i}].addresses`, a, 'an IPv4 address with prefix');
      }
    }
    if (nic.gateway !== undefined && !IPV4.test(nic.gateway)) throw new IdentityInvalid(vm, `nics[${i}].gateway`, nic.gateway, 'an IPv4 address');
    for (const ip of nic.dns ?? []) if (!IPV4.test(ip)) throw new IdentityInvalid(vm, `nics[${i}].dns`, ip, 'an IPv4 address');
  });
}
