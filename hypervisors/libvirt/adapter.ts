/**
 * The libvirt adapter: vmdr's HypervisorAdapter over libvirt's C API (the binding in api/), one
 * connection per adapter, for VMs, networks, checkpoints, backups and the guest agent.
 */
import { stat } from 'node:fs/promises';
import { HypervisorOperationFailed, IdentityInvalid, InvalidPowerState, NoDisplay, ScreenshotInvalid, Unsupported, VmAlreadyExists, VmdrError } from '../errors.js';
import { toPng } from '../screenshot-image.js';
import { checkGuestIdentity } from '../guest-identity.js';
import type {
  HypervisorNotice,
  AdapterOptions,
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
  ScreenImage,
  StopOptions,
  VmFilter,
  VmInfo,
  VmSpec,
} from '../types.js';
import { createOverlays, removeOverlays } from './boot-disks.js';
import { VIR_CONNECT_LIST_DOMAINS, VIR_DOMAIN_STATE, VIR_DOMAIN_UNDEFINE, VIR_DOMAIN_XML } from './api/codes.js';
import type { DomainDescription } from './api/procedures.js';
import { LibvirtConnection } from './connection.js';
import { callPool } from './api/pool.js';
import { diskCapacities } from './disk-capacities.js';
import { openDiskWriter } from './disk-writer.js';
import { addDiskToXml, setDiskImagesInXml, setNicIdentityInXml, removeSeedDiskFromXml, setSeedDiskInXml } from './domain-edit.js';
import { readLabels, removeLabels, setLabels } from './labels.js';
import { hasDisplay, parseDomain, parseDomainXml, renderDomainXml, serialLogOf } from './domain-xml.js';
import { LibvirtChangeTracker } from './change-tracker.js';
import { deleteIdentitySeed, seedPath, writeIdentitySeed } from './identity-seed.js';
import { readImageUser } from './image-user.js';
import { LibvirtNetworks } from './networks.js';
import { watchNotices } from './notices.js';
import { powerState, stopDomain } from './power.js';
import { powerStateOf } from './power-states.js';
import { StartLeaseFiles } from './start-lease.js';
import { startTokenApplies, withStartToken } from './start-token.js';
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
  readonly changeTracker: ChangeTracker;
  /** This host's own libvirtd only: its hook reads this host's /run. */
  readonly startLeases: StartLeaseFiles | undefined;

  constructor(
    readonly uri: string,
    options: AdapterOptions = {},
  ) {
    this.conn = new LibvirtConnection(uri, options.callTimeoutMs);
    this.networks = new LibvirtNetworks(this.conn);
    this.changeTracker = new LibvirtChangeTracker(this.conn);
    this.startLeases = startTokenApplies(uri) ? new StartLeaseFiles() : undefined;
  }

  /** A call thread started and libvirt loaded in it (tens of ms), ahead of the first call. */
  static warmUp(): void {
    callPool.warm();
  }

  async connect(): Promise<void> {
    await this.conn.open();
  }

  close(): Promise<void> {
    return this.conn.close();
  }

  watchVms(listener: (notice: HypervisorNotice) => void): () => void {
    return watchNotices(this.conn, listener);
  }

  /**
   * Leaves capacityBytes out (a read per disk, see disk-capacities.ts); getVm fills it in. Named
   * VMs are looked up one by one, the running ones listed by libvirt's ACTIVE flag: only the VMs
   * asked for are read and parsed.
   */
  async listVms(filter: VmFilter = {}): Promise<VmInfo[]> {
    const listFlags = filter.running ? VIR_CONNECT_LIST_DOMAINS.ACTIVE : 0;
    const described = filter.names
      ? await this.conn.call({ operation: 'read VMs' }, 'describeDomainsNamed', [...new Set(filter.names)], 0)
      : await this.conn.call({ operation: filter.running ? 'list running VMs' : 'list VMs' }, 'describeAllDomains', 0, listFlags);
    // A paused VM's QEMU runs too: libvirt's ACTIVE flag counts it, and so does `running` here.
    const picked = filter.names && filter.running ? described.filter((d) => d.state !== VIR_DOMAIN_STATE.SHUTOFF) : described;
    return picked.map((d) => this.vmInfo(d));
  }

  async getVm(ref: string): Promise<VmInfo> {
    const info = await this.describe(ref);
    await this.addCapacities(info);
    return info;
  }

  async powerState(vm: string): Promise<PowerState> {
    return powerState(this.conn, vm);
  }

  async defineVm(spec: VmSpec): Promise<VmInfo> {
    const xml = await renderDomainXml(spec);
    const exists = await this.conn.call({ operation: 'look up VM', vm: spec.name }, 'domainState', spec.name).then(
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
    const uuid = await this.conn.call({ operation: 'define VM', vm: spec.name }, 'defineDomain', xml);
    return this.describe(uuid, spec.name);
  }

  private imageUserRead: Promise<ImageUser | undefined> | undefined;

  /** Read once per adapter: qemu.conf changes only with a libvirtd restart. */
  imageUser(): Promise<ImageUser | undefined> {
    this.imageUserRead ??= readImageUser(this.conn).catch((err: unknown) => {
      this.imageUserRead = undefined;
      throw err;
    });
    return this.imageUserRead;
  }

  async start(vm: string): Promise<void> {
    // The split-brain hook lets a role=target VM start only with vmdr's token, keyed by name.
    const { name, uuid } = await this.conn.call({ operation: 'look up VM', vm }, 'identifyDomain', vm);
    await withStartToken(this.uri, name, () => this.conn.start({ operation: 'start VM', vm, requires: 'shutoff' }, uuid));
  }

  async stop(vm: string, options: StopOptions): Promise<void> {
    await stopDomain(this.conn, vm, options);
  }

  /** The VM must be off. Disk images, NVRAM files and consoles logs stay where they are. */
  async undefine(vm: string): Promise<void> {
    await this.requireOff(vm, 'undefine it');
    // libvirt refuses a plain undefine of a VM with checkpoints (vmdr's change tracking makes
    // them), snapshots or NVRAM. These flags drop only libvirt's metadata about them: the bitmaps
    // and snapshots inside the images stay.
    // The test driver keeps no checkpoints or NVRAM and refuses those flags.
    const flags = this.uri.startsWith('test') ? 0 : VIR_DOMAIN_UNDEFINE.CHECKPOINTS_METADATA | VIR_DOMAIN_UNDEFINE.SNAPSHOTS_METADATA | VIR_DOMAIN_UNDEFINE.KEEP_NVRAM;
    await this.conn.call({ operation: 'undefine VM', vm }, 'undefineDomain', vm, flags);
  }

  async setNicIdentity(vm: string, nicMac: string, identity: NicIdentity): Promise<VmInfo> {
    await this.requireOff(vm, 'change its NIC identity');
    if (identity.network !== undefined) await this.networks.get(identity.network);
    await this.redefine(vm, (xml) => {
      setNicIdentityInXml(xml, { vm, host: this.uri }, nicMac, identity);
      return true;
    });
    return this.describe(vm);
  }

  async setDiskImages(vm: string, disks: { target: string; path: string; format: DiskSpec['format'] }[]): Promise<VmInfo> {
    await this.requireOff(vm, 'change its disks');
    await this.redefine(vm, (xml) => {
      setDiskImagesInXml(xml, { vm, host: this.uri }, disks);
      return disks.length > 0;
    });
    // Without capacities: the caller just chose the images.
    return this.describe(vm);
  }

  async addDisk(vm: string, disk: DiskSpec & { target: string }): Promise<VmInfo> {
    await this.requireOff(vm, 'add a disk');
    await this.redefine(vm, (xml) => {
      addDiskToXml(xml, { vm, host: this.uri }, disk);
      return true;
    });
    return this.describe(vm);
  }

  /** The persistent definition, which getVm reads them from (a running VM too): labels are metadata only. */
  async setLabels(vm: string, labels: Record<string, string>): Promise<void> {
    await this.redefine(vm, (xml) => {
      if (Object.keys(labels).length === 0) return removeLabels(xml);
      setLabels(xml, labels);
      return true;
    });
  }

  async setAutostart(vm: string, autostart: boolean): Promise<void> {
    await this.conn.call({ operation: autostart ? 'turn autostart on' : 'turn autostart off', vm }, 'setDomainAutostart', vm, autostart);
  }

  /** With `vm`: one redefinition for its disks and its labels (a failover's promotion). */
  async prepareBootDisks(request: BootDisksRequest & { vm?: string; labels?: Record<string, string> }): Promise<BootDisk[]> {
    this.requireLocalFiles('preparing boot disks');
    const { vm, labels } = request;
    // Refused before a file is made: nothing changes for a VM that runs.
    if (vm) await this.requireOff(vm, 'change its disks');
    const disks = await createOverlays(request);
    if (vm) {
      await this.redefine(vm, (xml) => {
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
    await this.requireOff(vm, 'give it an identity');
    let info = await this.describe(vm);
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
    await this.redefine(vm, (xml) => {
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
    await this.requireOff(vm, 'take its identity seed away');
    const seed = (await this.describe(vm)).disks.find((d) => d.identitySeed)?.path;
    if (seed) await deleteIdentitySeed(seed);
    await this.redefine(vm, (xml) => removeSeedDiskFromXml(xml));
  }

  async openDiskWriter(vm: string, disk: string): Promise<DiskWriter> {
    // qemu-nbd opens the image where vmdr runs, which must be the libvirt host.
    this.requireLocalFiles("writing a VM's disk");
    if (this.uri.startsWith('test')) throw new Unsupported("writing a VM's disk (the test driver's disks are not files)", this.uri);
    await this.requireOff(vm, 'write its disks');
    return openDiskWriter(this.uri, await this.describe(vm), disk);
  }

  async serialLogPath(vm: string): Promise<string | undefined> {
    const xml = await this.conn.call({ operation: 'read VM definition', vm }, 'domainXml', vm, VIR_DOMAIN_XML.INACTIVE);
    return serialLogOf(parseDomain(xml, this.uri, vm));
  }

  /** The first display (screen 0), as the VM runs it now (its live definition says whether it has one). */
  async screenshot(vm: string): Promise<ScreenImage> {
    // Asked first: the test driver would picture a VM that is off.
    const state = await powerState(this.conn, vm);
    if (state !== 'running' && state !== 'paused') throw new InvalidPowerState(vm, this.uri, state, 'only a running VM has a screen to take a picture of');
    const xml = await this.conn.call({ operation: 'read VM definition', vm }, 'domainXml', vm, 0);
    if (!hasDisplay(parseDomain(xml, this.uri, vm))) throw new NoDisplay(vm, this.uri);
    const shot = await this.conn.call({ operation: 'take a screenshot', vm, requires: 'running' }, 'screenshot', vm, 0);
    if ('refused' in shot) throw new ScreenshotInvalid(vm, this.uri, shot.refused);
    try {
      return toPng(shot.mime, shot.data);
    } catch (err) {
      throw new ScreenshotInvalid(vm, this.uri, (err as Error).message, err);
    }
  }

  expectParallel(count: number): void {
    // A start does not hold a call thread (the events shim runs it); what the VMs ask besides is
    // short, so a second thread serves them all.
    callPool.warm(Math.min(count, 2));
    // The test driver starts at once, and a connection left open keeps its state for the process.
    if (!this.uri.startsWith('test')) this.conn.prepareStarts(count);
  }

  /** The test driver has no guest agent at all (a VM it does not have is still VM_NOT_FOUND). */
  async guestAgentPing(vm: string, timeoutMs: number): Promise<void> {
    if (this.uri.startsWith('test')) {
      await this.conn.call({ operation: 'look up VM', vm }, 'domainState', vm);
      throw new Unsupported('asking the QEMU guest agent (the test driver has none)', this.uri);
    }
    // libvirt counts whole seconds; 0 would mean "do not wait".
    const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
    await this.conn.call({ operation: 'ping the guest agent', vm, agent: true, requires: 'running', timeoutMs: seconds * 1000 + 10_000 }, 'agentCommand', vm, JSON.stringify({ execute: 'guest-ping' }), seconds);
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

  /** `vm` names the VM in errors until its XML has told us its name. */
  private async describe(ref: string, vm = ref): Promise<VmInfo> {
    return this.vmInfo(await this.conn.call({ operation: 'read VM definition', vm }, 'describeDomain', ref, 0));
  }

  private vmInfo(d: DomainDescription): VmInfo {
    const info = parseDomainXml(d.xml, powerStateOf(d.state), this.uri, d.name);
    info.autostart = d.autostart;
    // Labels are what vmdr wrote last (setLabels writes the persistent definition): a running
    // VM's live definition still has the ones it booted with.
    if (d.inactiveXml !== undefined) info.labels = readLabels(parseDomain(d.inactiveXml, this.uri, d.name)) ?? {};
    return info;
  }

  /** Disks without a medium (an empty CD-ROM) have no size and are left without one; see disk-capacities.ts for a running VM's. */
  private async addCapacities(info: VmInfo): Promise<void> {
    if (this.uri.startsWith('test')) return;
    const capacity = await diskCapacities(this.conn, info);
    for (const disk of info.disks) {
      const bytes = capacity[disk.target];
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

  private async requireOff(vm: string, wanted: string): Promise<void> {
    const state = await powerState(this.conn, vm);
    if (state !== 'shutoff') throw new InvalidPowerState(vm, this.uri, state, `stop it before you ${wanted}`);
  }

  /**
   * Edits the persistent definition and defines it again; libvirt applies it at the next boot.
   * `edit` returns false when it changed nothing, and then nothing is redefined.
   */
  private async redefine(vm: string, edit: (xml: XmlElement) => boolean): Promise<void> {
    const xml = await this.conn.call({ operation: 'read VM definition', vm }, 'domainXml', vm, VIR_DOMAIN_XML.INACTIVE | VIR_DOMAIN_XML.SECURE);
    const parsed = parseDomain(xml, this.uri, vm);
    if (!edit(parsed)) return;
    await this.conn.call({ operation: 'redefine VM', vm }, 'defineDomain', buildXml(parsed));
  }
}
