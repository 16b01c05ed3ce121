/**
 * The identity a VM boots with at the DR site, the vSphere way: its NICs' MACs and port groups
 * by ReconfigVM_Task, then a guest customization (CustomizeVM_Task, CustomizationLinuxPrep) with
 * the hostname and each NIC's fixed address, mask, gateway and DNS. vSphere keeps it pending and
 * VMware Tools applies it in the guest at the next power on; no file is involved.
 *
 * Which identity a VM was given is kept as its custom attribute `vmdr.identity` (the instance
 * id), so the same identity again changes nothing (`written: false`) while it is pending; once a
 * boot has applied it, it is given again (the next boot may start from a point's fresh disk).
 *
 * A pending customization cannot be taken back through the API: vSphere refuses a second one
 * until the guest has booted and applied the first (CustomizationPending), and removing the
 * identity only forgets which one was given. Linux guests only: a Windows guest needs Sysprep,
 * which this does not build.
 */
import { IdentityInvalid, VmdrError } from '../errors.js';
import { checkGuestIdentity } from '../guest-identity.js';
import type { AppliedGuestIdentity, GuestIdentity, GuestNicIdentity } from '../types.js';
import { nicEditSpec, type NetworkBacking } from './devices.js';
import { IDENTITY_FIELD, type CustomFields } from './labels.js';
import { faultType } from './fault-type.js';
import type { VsphereNetworks } from './network.js';
import { retrieve } from './property-collector.js';
import type { VsphereVms } from './vm.js';

/** LinuxPrep needs a domain; a bare hostname gets this one, as the guest would call itself. */
const NO_DOMAIN = 'localdomain';

export class VsphereCustomization {
  constructor(
    private readonly vms: VsphereVms,
    private readonly fields: CustomFields,
    private readonly networks: VsphereNetworks,
    private readonly uri: string,
  ) {}

  async apply(vm: string, identity: GuestIdentity): Promise<AppliedGuestIdentity> {
    checkGuestIdentity(vm, identity);
    identity.nics.forEach((nic, i) => {
      if (nic.addresses.length > 1) throw new IdentityInvalid(vm, `nics[${i}].addresses`, nic.addresses.join(', '), 'one IPv4 address (a vSphere customization gives each NIC one)');
    });
    await this.vms.requireOff(vm, 'give it an identity');
    let record = await this.vms.read(vm);
    const nics = record.hardware.nics;
    if (identity.nics.length > nics.length) throw new IdentityInvalid(vm, 'nics', `${identity.nics.length} NICs`, `at most the ${nics.length} NICs the VM has`);
    const asAsked = identity.nics.every((w, i) => (w.mac === undefined || nics[i]!.mac === w.mac.toLowerCase()) && (w.network === undefined || nics[i]!.network === w.network));
    const applied = () => record.info.nics.map((n) => ({ mac: n.mac, ...(n.network ? { network: n.network } : {}) }));
    // A customization is used up by the boot that applies it, and the next boot may be a fresh
    // copy of a point (a failover after a revert) that carries production's identity again: so
    // this very identity is in place only while it is still pending.
    const [tools] = await retrieve(this.vms.session, { type: 'VirtualMachine', paths: ['config.tools.pendingCustomization'], objects: [record.ref] });
    const pending = Boolean(tools?.props['config.tools.pendingCustomization']);
    if (pending && asAsked && (await this.fields.valueOf(record.customValue, IDENTITY_FIELD)) === identity.instanceId) return { nics: applied(), written: false };
    // Refused before the NICs change: the VM stays as it was.
    if (pending) throw this.pending(vm);
    const edits: object[] = [];
    for (const [i, wanted] of identity.nics.entries()) {
      const nic = nics[i]!;
      const mac = wanted.mac?.toLowerCase();
      const change: { mac?: string; network?: NetworkBacking } = {};
      if (mac !== undefined && nic.mac !== mac) change.mac = mac;
      if (wanted.network !== undefined && nic.network !== wanted.network) change.network = await this.networks.resolve(wanted.network);
      if (change.mac || change.network) edits.push(nicEditSpec(nic, change));
    }
    if (edits.length) {
      await this.vms.reconfigure(vm, { deviceChange: edits });
      record = await this.vms.read(vm);
    }
    const spec = customizationSpec(identity, record.info.nics.map((n) => n.mac));
    await this.vms.withRef(vm, (ref) => this.vms.task('CustomizeVM_Task', ref, { spec }, 'customize', vm)).catch((err: unknown) => {
      throw faultType(err) === 'CustomizationPending' ? this.pending(vm, err) : err;
    });
    await this.fields.set(record.ref, 'VirtualMachine', { [IDENTITY_FIELD]: identity.instanceId });
    return { nics: applied(), written: true };
  }

  private pending(vm: string, cause?: unknown): VmdrError {
    return new VmdrError('IDENTITY_PENDING', `VM ${JSON.stringify(vm)} on ${this.uri} still has a guest customization pending; vSphere takes no other until the guest has booted and applied it`, {
      subject: { vm, host: this.uri },
      ...(cause ? { cause } : {}),
      remedy: 'power the VM on once (its guest applies the pending identity), stop it, and give the new one',
    });
  }

  /** Forgets which identity the VM was given (a pending customization stays: see the file's comment). */
  async remove(vm: string): Promise<void> {
    await this.vms.requireOff(vm, 'take its identity away');
    const record = await this.vms.read(vm);
    if ((await this.fields.valueOf(record.customValue, IDENTITY_FIELD)) === undefined) return;
    await this.fields.set(record.ref, 'VirtualMachine', { [IDENTITY_FIELD]: '' });
  }
}

/** Every NIC of the VM gets a mapping (vSphere wants one each): those the identity leaves out use DHCP. */
export function customizationSpec(identity: GuestIdentity, macs: string[]): object {
  const [host, ...domain] = identity.hostname.split('.');
  const dns = [...new Set(identity.nics.flatMap((n) => n.dns ?? []))];
  return {
    identity: { _type: 'CustomizationLinuxPrep', hostName: { _type: 'CustomizationFixedName', name: host }, domain: domain.length ? domain.join('.') : NO_DOMAIN },
    globalIPSettings: { ...(domain.length ? { dnsSuffixList: [domain.join('.')] } : {}), ...(dns.length ? { dnsServerList: dns } : {}) },
    nicSettingMap: macs.map((mac, i) => ({ macAddress: mac, adapter: adapterSettings(identity.nics[i]) })),
  };
}

function adapterSettings(nic: GuestNicIdentity | undefined): object {
  const address = nic?.addresses[0];
  if (!nic || !address) return { ip: { _type: 'CustomizationDhcpIpGenerator' } };
  const [ip, prefix] = address.split('/');
  return {
    ip: { _type: 'CustomizationFixedIp', ipAddress: ip },
    subnetMask: subnetMask(Number(prefix)),
    ...(nic.gateway ? { gateway: [nic.gateway] } : {}),
    ...(nic.dns?.length ? { dnsServerList: nic.dns } : {}),
  };
}

/** 24 → 255.255.255.0 */
export function subnetMask(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (bits >>> shift) & 0xff).join('.');
}
