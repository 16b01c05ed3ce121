/**
 * The libvirt adapter: vmdr's HypervisorAdapter over @unraid/libvirt for domain lifecycle and
 * virsh for what the binding lacks (networks, undefine flags, block sizes, the guest agent).
 */
import { stat } from 'node:fs/promises';
import { DomainGetXMLDescFlags } from '@unraid/libvirt';
import { CleanupFailed, HypervisorOperationFailed, IdentityInvalid, InvalidPowerState, Unsupported, VmAlreadyExists, VmdrError } from '../errors.js';
import { checkGuestIdentity } from '../guest-identity.js';
import type {
  AppliedGuestIdentity,
  BootDisk,
  BootDisksRequest,
  ChangeTracker,
  DiskSpec,
  DiskWriter,
  GuestIdentity,
  HypervisorAdapter,
  ImageUser,
  IsolatedNetworkSpec,
  NetworkInfo,
  NicIdentity,
  PowerState,
  StopOptions,
  VmInfo,
  VmSpec,
} from '../types.js';
import { createOverlays, removeOverlays } from './boot-disks.js';
import { LibvirtConnection, type Domain } from './connection.js';
import { diskCapacities } from './disk-sizes.js';
import { openDiskWriter } from './disk-writer.js';
import { addDiskToXml, setDiskImagesInXml, setNicIdentityInXml, removeSeedDiskFromXml, setSeedDiskInXml } from './domain-edit.js';
import { readLabels, removeLabels, setLabels } from './labels.js';
import { parseDomain, parseDomainXml, renderDomainXml, serialLogOf } from './domain-xml.js';
import { LibvirtChangeTracker } from './change-tracker.js';
import { deleteIdentitySeed, seedPath, writeIdentitySeed } from './identity-seed.js';
import { readImageUser } from './image-user.js';
import { LibvirtNetworks } from './networks.js';
import { powerState, stopDomain } from './power.js';
import { withStartToken } from './start-token.js';
import { virsh } from './virsh.js';
import { buildXml, type XmlElement } from './xml.js';

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}

export class LibvirtAdapter implements HypervisorAdapter {
  readonly kind = 'libvirt' as const;
  private readonly conn: LibvirtConnection;
  private readonly networks: LibvirtNetworks;
  /** Checkpoints and backups go through virsh, which cannot see an in-process test driver. */
  readonly changeTracker: ChangeTracker | undefined;

  constructor(readonly uri: string) {
    this.conn = new LibvirtConnection(uri);
    this.networks = new LibvirtNetworks(uri, this.conn.virshSharesState);
    this.changeTracker = this.conn.virshSharesState ? new LibvirtChangeTracker(uri, (vm) => this.liveXml(vm)) : undefined;
  }

  async connect(): Promise<void> {
    await this.conn.open();
  }

  close(): Promise<void> {
    return this.conn.close();
  }

  /** Leaves capacityBytes out (it costs a virsh call per VM); getVm fills it in. */
  async listVms(): Promise<VmInfo[]> {
    const domains = await this.conn.call({ operation: 'list VMs' }, (h) => h.connectListAllDomains());
    const described = await Promise.all(
      domains.map((d) =>
        this.describe(d).catch((err: unknown) => {
          // Undefined by someone else since the list was taken: it is simply no longer there.
          if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return undefined;
          throw err;
        }),
      ),
    );
    return described.filter((vm): vm is VmInfo => vm !== undefined);
  }

  async getVm(ref: string): Promise<VmInfo> {
    const info = await this.describe(await this.conn.lookup(ref), ref);
    await Promise.all([this.addCapacities(info), this.addAutostart(info)]);
    return info;
  }

  async powerState(vm: string): Promise<PowerState> {
    return powerState(this.conn, await this.conn.lookup(vm), vm);
  }

  async defineVm(spec: VmSpec): Promise<VmInfo> {
    const xml = await renderDomainXml(spec);
    const exists = await this.conn.lookup(spec.name).then(
      () => true,
      (err: unknown) => {
        if (err instanceof VmdrError && err.code === 'VM_NOT_FOUND') return false;
        throw err;
      },
    );
    // domainDefineXML would silently replace the definition of a VM that has this name and UUID;
    // defineVm only ever makes new VMs.
    if (exists) throw new VmAlreadyExists(spec.name, this.uri);
    // qemu defines a VM on a network that does not exist and fails only at its first start.
    for (const network of new Set(spec.nics.map((n) => n.network))) await this.networks.get(network);
    const domain = await this.conn.call({ operation: 'define VM', vm: spec.name }, (h) => h.domainDefineXML(xml));
    try {
      return await this.describe(domain, spec.name);
    } catch (err) {
      // A half-made VM is taken back, and a failure to do so is reported beside the cause.
      try {
        await this.conn.call({ operation: 'undefine VM', vm: spec.name }, (h) => h.domainUndefine(domain));
      } catch (cleanupErr) {
        throw new CleanupFailed(err, `undefine VM ${spec.name}, defined but unreadable`, cleanupErr);
      }
      throw err;
    }
  }

  private imageUserRead: Promise<ImageUser | undefined> | undefined;

  /** Read once per adapter: qemu.conf changes only with a libvirtd restart. */
  imageUser(): Promise<ImageUser | undefined> {
    // The in-process test driver runs no QEMU, and virsh cannot reach it.
    if (!this.conn.virshSharesState) return Promise.resolve(undefined);
    this.imageUserRead ??= readImageUser(this.uri).catch((err: unknown) => {
      this.imageUserRead = undefined;
      throw err;
    });
    return this.imageUserRead;
  }

  async start(vm: string): Promise<void> {
    const domain = await this.conn.lookup(vm);
    // The split-brain hook lets a role=target VM start only with vmdr's token, keyed by name.
    const name = await this.conn.call({ operation: 'read VM name', vm }, (h) => h.domainGetName(domain));
    await withStartToken(this.uri, name, () => this.conn.call({ operation: 'start VM', vm }, (h) => h.domainCreate(domain)));
  }

  async stop(vm: string, options: StopOptions): Promise<void> {
    await stopDomain(this.conn, await this.conn.lookup(vm), vm, options);
  }

  /** The VM must be off. Disk images, NVRAM files and consoles logs stay where they are. */
  async undefine(vm: string): Promise<void> {
    const domain = await this.conn.lookup(vm);
    await this.requireOff(domain, vm, 'undefine it');
    if (!this.conn.virshSharesState) {
      await this.conn.call({ operation: 'undefine VM', vm }, (h) => h.domainUndefine(domain));
      return;
    }
    // The binding's undefine takes no flags, and libvirt refuses a plain undefine of a VM with
    // checkpoints (vmdr's change tracking makes them), snapshots or NVRAM. These flags drop only
    // libvirt's metadata about them: the bitmaps and snapshots inside the images stay.
    const uuid = await this.conn.call({ operation: 'read VM UUID', vm }, (h) => h.domainGetUUIDString(domain));
    await virsh(this.uri, ['undefine', '--checkpoints-metadata', '--snapshots-metadata', '--keep-nvram', '--domain', uuid], {
      operation: 'undefine VM',
      vm,
    });
  }

  async setNicIdentity(vm: string, nicMac: string, identity: NicIdentity): Promise<VmInfo> {
    const domain = await this.conn.lookup(vm);
    await this.requireOff(domain, vm, 'change its NIC identity');
    if (identity.network !== undefined) await this.networks.get(identity.network);
    await this.redefine(domain, vm, (xml) => {
      setNicIdentityInXml(xml, { vm, host: this.uri }, nicMac, identity);
      return true;
    });
    return this.describe(domain, vm);
  }

  async setDiskImages(vm: string, disks: { target: string; path: string; format: 'qcow2' | 'raw' }[]): Promise<VmInfo> {
    const domain = await this.conn.lookup(vm);
    await this.requireOff(domain, vm, 'change its disks');
    await this.redefine(domain, vm, (xml) => {
      setDiskImagesInXml(xml, { vm, host: this.uri }, disks);
      return disks.length > 0;
    });
    // Without capacities (a virsh call per disk): the caller just chose the images.
    return this.describe(domain, vm);
  }

  async addDisk(vm: string, disk: DiskSpec & { target: string }): Promise<VmInfo> {
    const domain = await this.conn.lookup(vm);
    await this.requireOff(domain, vm, 'add a disk');
    await this.redefine(domain, vm, (xml) => {
      addDiskToXml(xml, { vm, host: this.uri }, disk);
      return true;
    });
    return this.describe(domain, vm);
  }

  /** The persistent definition, which getVm reads them from (a running VM too): labels are metadata only. */
  async setLabels(vm: string, labels: Record<string, string>): Promise<void> {
    const domain = await this.conn.lookup(vm);
    await this.redefine(domain, vm, (xml) => {
      if (Object.keys(labels).length === 0) return removeLabels(xml);
      setLabels(xml, labels);
      return true;
    });
  }

  /** Through virsh: the binding has no autostart call. */
  async setAutostart(vm: string, autostart: boolean): Promise<void> {
    const domain = await this.conn.lookup(vm);
    if (!this.conn.virshSharesState) throw new Unsupported('autostart (virsh cannot share the in-process test driver)', this.uri);
    const uuid = await this.conn.call({ operation: 'read VM UUID', vm }, (h) => h.domainGetUUIDString(domain));
    await virsh(this.uri, ['autostart', ...(autostart ? [] : ['--disable']), '--domain', uuid], { operation: autostart ? 'turn autostart on' : 'turn autostart off', vm });
  }

  /** With `vm`: one redefinition for its disks and its labels (a failover's promotion). */
  async prepareBootDisks(request: BootDisksRequest & { vm?: string; labels?: Record<string, string> }): Promise<BootDisk[]> {
    this.requireLocalFiles('preparing boot disks');
    const { vm, labels } = request;
    // Refused before a file is made: nothing changes for a VM that runs.
    const domain = vm === undefined ? undefined : await this.conn.lookup(vm);
    if (domain && vm) await this.requireOff(domain, vm, 'change its disks');
    const disks = await createOverlays(request);
    if (domain && vm) {
      await this.redefine(domain, vm, (xml) => {
        setDiskImagesInXml(xml, { vm, host: this.uri }, disks);
        if (labels) setLabels(xml, labels);
        return true;
      });
    }
    return disks;
  }

  async releaseBootDisks(request: BootDisksRequest): Promise<void> {
    this.requireLocalFiles('releasing boot disks');
    await removeOverlays(request);
  }

  /** NICs first (each a redefinition), then the seed: beside the VM's first disk image. */
  async applyGuestIdentity(vm: string, identity: GuestIdentity): Promise<AppliedGuestIdentity> {
    this.requireLocalFiles('giving a guest its identity');
    checkGuestIdentity(vm, identity);
    const domain = await this.conn.lookup(vm);
    await this.requireOff(domain, vm, 'give it an identity');
    let info = await this.describe(domain, vm);
    if (identity.nics.length > info.nics.length) {
      throw new IdentityInvalid(vm, 'nics', `${identity.nics.length} NICs`, `at most the ${info.nics.length} NICs the VM has`);
    }
    const home = info.disks.find((d) => d.device === 'disk' && !d.identitySeed && d.path)?.path;
    if (!home) throw new HypervisorOperationFailed('apply guest identity', this.uri, 'it has no disk image to keep its identity seed beside', { vm });
    const seed = seedPath(home, identity.instanceId);
    const replaced = info.disks.find((d) => d.identitySeed)?.path;
    const nicsAsAsked = identity.nics.every((wanted, i) => (wanted.mac === undefined || info.nics[i]!.mac === wanted.mac.toLowerCase()) && (wanted.network === undefined || info.nics[i]!.network === wanted.network));
    const applied = () => ({ nics: info.nics.map((n) => ({ mac: n.mac, ...(n.network ? { network: n.network } : {}) })), seed });
    // The seed is named by its instance id, so the one attached and on disk is this identity's.
    if (nicsAsAsked && replaced === seed && (await isFile(seed))) return { ...applied(), written: false };
    for (const [i, wanted] of identity.nics.entries()) {
      const nic = info.nics[i]!;
      const mac = wanted.mac?.toLowerCase();
      if ((mac !== undefined && nic.mac !== mac) || (wanted.network !== undefined && nic.network !== wanted.network)) {
        info = await this.setNicIdentity(vm, nic.mac, { mac, network: wanted.network });
      }
    }
    await writeIdentitySeed(seed, { ...identity, nics: identity.nics.map((nic, i) => ({ ...nic, mac: info.nics[i]!.mac })) });
    await this.redefine(domain, vm, (xml) => {
      setSeedDiskInXml(xml, seed);
      return true;
    });
    if (replaced && replaced !== seed) await deleteIdentitySeed(replaced);
    return { ...applied(), written: true };
  }

  /**
   * The file goes before the definition's reference to it: a call cut short between the two finds
   * the reference again and finishes, where the other order would forget a file.
   */
  async removeGuestIdentity(vm: string): Promise<void> {
    this.requireLocalFiles('taking a guest identity away');
    const domain = await this.conn.lookup(vm);
    await this.requireOff(domain, vm, 'take its identity seed away');
    const seed = (await this.describe(domain, vm)).disks.find((d) => d.identitySeed)?.path;
    if (seed) await deleteIdentitySeed(seed);
    await this.redefine(domain, vm, (xml) => removeSeedDiskFromXml(xml));
  }

  async openDiskWriter(vm: string, disk: string): Promise<DiskWriter> {
    // qemu-nbd opens the image where vmdr runs, which must be the libvirt host.
    this.requireLocalFiles("writing a VM's disk");
    const domain = await this.conn.lookup(vm);
    if (!this.conn.virshSharesState) throw new Unsupported("writing a VM's disk (the test driver's disks are not files)", this.uri);
    await this.requireOff(domain, vm, 'write its disks');
    return openDiskWriter(this.uri, await this.describe(domain, vm), disk);
  }

  async serialLogPath(vm: string): Promise<string | undefined> {
    const domain = await this.conn.lookup(vm);
    const xml = await this.conn.call({ operation: 'read VM definition', vm }, (h) => h.domainGetXMLDesc(domain, DomainGetXMLDescFlags.INACTIVE));
    return serialLogOf(parseDomain(xml, this.uri));
  }

  /** Through virsh: the binding has no agent call. The test driver has no guest agent at all. */
  async guestAgentPing(vm: string, timeoutMs: number): Promise<void> {
    // Looked up here for a clean VmNotFound: virsh says only "failed to get domain".
    await this.conn.lookup(vm);
    if (!this.conn.virshSharesState) {
      throw new Unsupported('asking the QEMU guest agent (virsh cannot share the in-process test driver, which has no agent anyway)', this.uri);
    }
    // virsh counts whole seconds and refuses 0.
    const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
    await virsh(this.uri, ['qemu-agent-command', '--domain', vm, '--timeout', String(seconds), '--cmd', JSON.stringify({ execute: 'guest-ping' })], {
      operation: 'ping the guest agent',
      vm,
      timeoutMs: seconds * 1000 + 10_000,
    });
  }

  listNetworks(): Promise<NetworkInfo[]> {
    return this.networks.list();
  }

  ensureIsolatedNetwork(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    return this.networks.ensureIsolated(spec);
  }

  removeNetwork(name: string): Promise<void> {
    return this.networks.remove(name);
  }

  /** The running definition, through the open connection (a sync cycle asks every time). */
  private async liveXml(vm: string): Promise<string> {
    const domain = await this.conn.lookup(vm);
    return this.conn.call({ operation: 'read VM', vm }, (h) => h.domainGetXMLDesc(domain));
  }

  /** `vm` names the VM in errors until its XML has told us its name. */
  private async describe(domain: Domain, vm?: string): Promise<VmInfo> {
    const xml = await this.conn.call({ operation: 'read VM definition', vm }, (h) => h.domainGetXMLDesc(domain));
    const info = parseDomainXml(xml, 'unknown', this.uri);
    info.powerState = await powerState(this.conn, domain, info.name);
    if (info.powerState !== 'shutoff') {
      // Labels are what vmdr wrote last (setLabels writes the persistent definition): a running
      // VM's live definition still has the ones it booted with.
      const persistent = await this.conn.call({ operation: 'read VM definition', vm: info.name }, (h) => h.domainGetXMLDesc(domain, DomainGetXMLDescFlags.INACTIVE));
      info.labels = readLabels(parseDomain(persistent, this.uri)) ?? {};
    }
    return info;
  }

  private async addCapacities(info: VmInfo): Promise<void> {
    // The test driver's disks are not real files, and virsh could not see its VMs anyway.
    if (!this.conn.virshSharesState || info.disks.length === 0) return;
    const capacity = await diskCapacities(this.uri, info);
    for (const disk of info.disks) {
      const bytes = capacity.get(disk.target);
      if (bytes !== undefined) disk.capacityBytes = bytes;
    }
  }

  /**
   * Boot disks and seeds are files vmdr writes with qemu-img and xorriso where it runs: that must
   * be the libvirt host itself (each site's own vmdr does it for its VMs).
   */
  private requireLocalFiles(operation: string): void {
    if (new URL(this.uri).hostname) throw new Unsupported(`${operation} through a remote libvirt URI (vmdr writes those files on the host it runs on: run it on that host)`, this.uri);
  }

  private async addAutostart(info: VmInfo): Promise<void> {
    // The binding has no autostart call, and virsh cannot see the test driver's VMs.
    if (!this.conn.virshSharesState) return;
    const out = await virsh(this.uri, ['dominfo', '--domain', info.id], { operation: 'read autostart', vm: info.name });
    const value = /^Autostart:\s*(\S+)/m.exec(out)?.[1];
    if (value === 'enable' || value === 'disable') info.autostart = value === 'enable';
  }

  private async requireOff(domain: Domain, vm: string, wanted: string): Promise<void> {
    const state = await powerState(this.conn, domain, vm);
    if (state !== 'shutoff') throw new InvalidPowerState(vm, this.uri, state, `stop it before you ${wanted}`);
  }

  /**
   * Edits the persistent definition and defines it again; libvirt applies it at the next boot.
   * `edit` returns false when it changed nothing, and then nothing is redefined.
   */
  private async redefine(domain: Domain, vm: string, edit: (xml: XmlElement) => boolean): Promise<void> {
    const xml = await this.conn.call({ operation: 'read VM definition', vm }, (h) =>
      h.domainGetXMLDesc(domain, DomainGetXMLDescFlags.INACTIVE | DomainGetXMLDescFlags.SECURE),
    );
    const parsed = parseDomain(xml, this.uri);
    if (!edit(parsed)) return;
    await this.conn.call({ operation: 'redefine VM', vm }, (h) => h.domainDefineXML(buildXml(parsed)));
  }
}
