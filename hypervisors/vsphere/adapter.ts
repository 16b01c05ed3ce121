/**
 * The vSphere adapter: vmdr's HypervisorAdapter over the vSphere Web Services API (SOAP), for a
 * datacenter of a vCenter or an ESXi host (`vsphere://user@host[:port]/Datacenter`). One session
 * per adapter; what vmdr makes goes in the datastore, resource pool and folder the endpoint names
 * (placement.ts), resolved once at connect.
 *
 * What differs from libvirt, on purpose:
 * - undefine unregisters a VM and leaves its files (a pre-staged target's disks are the replica's
 *   materialized points); only a drill's linked clone is destroyed with its files (snapshot.ts).
 * - identity is a guest customization (customization.ts), applied by VMware Tools at boot.
 * - there is no serial console file, no changed-block tracking here (CBT cannot be tested against
 *   the simulator: issue 14's known limit), and no writer on a VM's disk (failback to a VM on
 *   vSphere is not part of issue 14).
 */
import { HypervisorOperationFailed, InvalidNicIdentity, NicNotFound, NoDisplay, Unsupported } from '../errors.js';
import type {
  AdapterOptions,
  AppliedGuestIdentity,
  BootDisk,
  BootDisksRequest,
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
  TaskOptions,
  VmFilter,
  VmInfo,
  VmSpec,
} from '../types.js';
import { materializePoint, removeMaterialized } from './boot-disks.js';
import { VsphereCustomization } from './customization.js';
import { isDatastorePath, nicEditSpec } from './devices.js';
import { parseVsphereUri, type VsphereEndpoint } from './endpoint.js';
import { CustomFields } from './labels.js';
import { VsphereNetworks } from './network.js';
import { resolvePlacement, type Placement } from './placement.js';
import { items } from './property-values.js';
import { retrieve } from './property-collector.js';
import { VsphereSession } from './session.js';
import { VsphereClones } from './snapshot.js';
import { waitForTools } from './tools.js';
import { VsphereVms } from './vm.js';

/** Where a drill's boot disks go (no VM of its own yet): a folder of the default datastore. */
export const DRILL_BOOT_FOLDER = 'vmdr-boot';

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

interface Connected {
  session: VsphereSession;
  place: Placement;
  fields: CustomFields;
  networks: VsphereNetworks;
  vms: VsphereVms;
  customization: VsphereCustomization;
  clones: VsphereClones;
}

export class VsphereAdapter implements HypervisorAdapter {
  readonly kind = 'vsphere' as const;
  private readonly endpoint: VsphereEndpoint;
  private readonly callTimeoutMs: number | undefined;
  private connecting: Promise<Connected> | undefined;

  constructor(
    readonly uri: string,
    options: AdapterOptions = {},
  ) {
    this.endpoint = parseVsphereUri(uri, options.vsphere);
    this.callTimeoutMs = options.callTimeoutMs;
  }

  async connect(): Promise<void> {
    await this.connected();
  }

  async close(): Promise<void> {
    const connecting = this.connecting;
    this.connecting = undefined;
    if (!connecting) return;
    const c = await connecting.catch(() => undefined);
    await c?.session.logout();
  }

  async listVms(filter?: VmFilter): Promise<VmInfo[]> {
    return (await this.connected()).vms.list(filter);
  }

  async getVm(ref: string): Promise<VmInfo> {
    return (await (await this.connected()).vms.read(ref)).info;
  }

  async powerState(vm: string): Promise<PowerState> {
    return (await this.connected()).vms.powerState(vm);
  }

  /** With `cloneOf`, a linked clone of that VM (a drill's VM: snapshot.ts); otherwise a new VM (vm.ts). */
  async defineVm(spec: VmSpec): Promise<VmInfo> {
    const c = await this.connected();
    if (spec.cloneOf !== undefined) await c.clones.clone({ ...spec, cloneOf: spec.cloneOf });
    else await c.vms.define(spec);
    return (await c.vms.read(spec.name)).info;
  }

  async start(vm: string): Promise<void> {
    await (await this.connected()).vms.powerOn(vm);
  }

  async stop(vm: string, options: StopOptions): Promise<void> {
    await (await this.connected()).vms.stop(vm, options);
  }

  /**
   * Unregisters the VM (UnregisterVM) rather than destroying it (Destroy_Task deletes its files):
   * a target's disks are the replica's boot disks, which only releaseBootDisks removes. A drill's
   * linked clone is the exception: its files are its own throwaway child disks, so it is destroyed.
   */
  async undefine(vm: string): Promise<void> {
    const c = await this.connected();
    await c.vms.requireOff(vm, 'undefine it');
    const record = await c.vms.read(vm);
    if (record.cloneOf) await c.vms.destroy(vm);
    else await c.vms.unregister(vm);
  }

  async setNicIdentity(vm: string, nicMac: string, identity: NicIdentity): Promise<VmInfo> {
    const c = await this.connected();
    await c.vms.requireOff(vm, 'change its NIC identity');
    const record = await c.vms.read(vm);
    const nic = record.hardware.nics.find((n) => n.mac === nicMac.toLowerCase());
    if (!nic) throw new NicNotFound(vm, this.uri, nicMac);
    const mac = identity.mac?.toLowerCase();
    if (mac !== undefined) {
      if (!MAC.test(mac)) throw new InvalidNicIdentity(vm, this.uri, nicMac, `${identity.mac} is not a MAC address`);
      if (record.hardware.nics.some((n) => n !== nic && n.mac === mac)) throw new InvalidNicIdentity(vm, this.uri, nicMac, `another NIC of the VM has MAC ${mac}`);
    }
    const network = identity.network !== undefined ? await c.networks.resolve(identity.network) : undefined;
    if ((mac !== undefined && mac !== nic.mac) || (network && network.name !== nic.network)) {
      await c.vms.reconfigure(vm, { deviceChange: [nicEditSpec(nic, { ...(mac ? { mac } : {}), ...(network ? { network } : {}) })] });
    }
    return (await c.vms.read(vm)).info;
  }

  /**
   * A datastore path (a VMDK) is attached as it is; a path of this host (the replica's base image,
   * as a revert gives) puts the disk's placeholder back: see VsphereVms.setDiskFiles.
   */
  async setDiskImages(vm: string, disks: { target: string; path: string; format: DiskSpec['format'] }[]): Promise<VmInfo> {
    const c = await this.connected();
    await c.vms.requireOff(vm, 'change its disks');
    for (const d of disks) {
      if (isDatastorePath(d.path) && d.format !== 'vmdk') throw new Unsupported(`a ${d.format} disk image (${d.path}) for VM ${JSON.stringify(vm)}: vSphere opens VMDKs`, this.uri);
    }
    await c.vms.setDiskFiles(vm, disks);
    return (await c.vms.read(vm)).info;
  }

  async addDisk(vm: string, disk: DiskSpec & { target: string }): Promise<VmInfo> {
    const c = await this.connected();
    await c.vms.requireOff(vm, 'add a disk');
    await c.vms.addDisk(vm, disk);
    return (await c.vms.read(vm)).info;
  }

  /** Custom attributes live in vCenter, not in the VM's configuration: a running VM can take them. */
  async setLabels(vm: string, labels: Record<string, string>): Promise<void> {
    const c = await this.connected();
    const record = await c.vms.read(vm);
    await c.fields.replaceLabels(record.ref, 'VirtualMachine', record.customValue, labels);
  }

  /**
   * Unsupported: autostart on vSphere is a per-host list (HostAutoStartManager) that follows a VM
   * no further than its host, and in a cluster HA decides what restarts; vmdr does not manage
   * it (the simulator has no such manager either). getVm leaves `autostart` out, so a fence
   * never asks for it; vSphere VMs are not replicated sources here (no CBT).
   */
  async setAutostart(vm: string, autostart: boolean): Promise<void> {
    throw new Unsupported(`turning autostart ${autostart ? 'on' : 'off'} for VM ${JSON.stringify(vm)} (vSphere's autostart is per host; vmdr leaves it to the host or HA)`, this.uri);
  }

  /**
   * The point's disks as VMDKs (vs-disks' boot-disks.ts). With `vm`: in that VM's own folder on
   * its datastore, and the VM's disks pointed at them, its labels replaced; without (a drill):
   * in `vmdr-boot/` on the default datastore, for the drill's clone to be defined on.
   */
  async prepareBootDisks(request: BootDisksRequest & { vm?: string; labels?: Record<string, string> }, task: TaskOptions = {}): Promise<BootDisk[]> {
    const c = await this.connected();
    const { vm, labels, ...boot } = request;
    const datacenter = c.place.datacenter.name;
    let place = { datacenter, datastore: c.place.datastore.name, folder: DRILL_BOOT_FOLDER };
    if (vm) {
      await c.vms.requireOff(vm, 'change its disks');
      const own = folderOf((await c.vms.read(vm)).vmxPath);
      if (own) place = { datacenter, ...own };
    }
    const disks = await materializePoint(c.session, place, boot, task);
    if (vm) {
      await c.vms.setDiskFiles(vm, disks);
      if (labels) await this.setLabels(vm, labels);
    }
    return disks;
  }

  /**
   * What was made for `boot` is found by name on the default datastore (in a VM's folder or in
   * `vmdr-boot/`): the request does not say which VM it was for.
   */
  async releaseBootDisks(request: BootDisksRequest): Promise<void> {
    const c = await this.connected();
    const ds = c.place.datastore;
    const [datastore] = await retrieve(c.session, { type: 'Datastore', paths: ['browser'], objects: [ds.ref] });
    const browser = datastore?.props.browser;
    if (!browser) throw new HypervisorOperationFailed('find boot disks', this.uri, `datastore ${ds.name} has no browser`);
    const found = await c.vms.task('SearchDatastoreSubFolders_Task', browser as Placement['pool'], { datastorePath: `[${ds.name}]`, searchSpec: { matchPattern: [`${request.boot}-*.vmdk`] } }, 'find boot disks', request.boot);
    const folders = new Set<string>();
    for (const result of items<{ folderPath?: string; file?: unknown }>(found)) {
      if (items(result.file).length && result.folderPath) folders.add(folderOf(`${result.folderPath.replace(/\/?$/, '/')}x`)!.folder);
    }
    for (const folder of folders) await removeMaterialized(c.session, { datacenter: c.place.datacenter.name, datastore: ds.name, folder }, request);
  }

  async applyGuestIdentity(vm: string, identity: GuestIdentity): Promise<AppliedGuestIdentity> {
    return (await this.connected()).customization.apply(vm, identity);
  }

  async removeGuestIdentity(vm: string): Promise<void> {
    await (await this.connected()).customization.remove(vm);
  }

  async openDiskWriter(vm: string, _disk: string): Promise<DiskWriter> {
    throw new Unsupported(`writing a disk of VM ${JSON.stringify(vm)} (failback to a VM on vSphere is not part of vmdr yet)`, this.uri);
  }

  /** vSphere VMs have no console file vmdr could read. */
  async serialLogPath(_vm: string): Promise<string | undefined> {
    return undefined;
  }

  /** The 0.24 simulator has no CreateScreenshot_Task; vmdr takes no vSphere screenshots. */
  async screenshot(vm: string): Promise<ScreenImage> {
    await this.getVm(vm);
    throw new NoDisplay(vm, this.uri);
  }

  /** VMware Tools stand in for the QEMU guest agent: see tools.ts. */
  async guestAgentPing(vm: string, timeoutMs: number): Promise<void> {
    const c = await this.connected();
    await waitForTools(c.vms, this.uri, vm, timeoutMs);
  }

  async listNetworks(): Promise<NetworkInfo[]> {
    return (await this.connected()).networks.list();
  }

  async ensureIsolatedNetwork(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    return (await this.connected()).networks.ensureIsolated(spec);
  }

  async removeNetwork(name: string): Promise<void> {
    await (await this.connected()).networks.remove(name);
  }

  /** ESXi opens disks itself; no local user needs to reach them. */
  async imageUser(): Promise<ImageUser | undefined> {
    return undefined;
  }

  private connected(): Promise<Connected> {
    this.connecting ??= this.open().catch((err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    return this.connecting;
  }

  private async open(): Promise<Connected> {
    const session = await VsphereSession.open(this.endpoint, this.callTimeoutMs !== undefined ? { callTimeoutMs: this.callTimeoutMs } : {});
    try {
      const place = await resolvePlacement(session, this.endpoint);
      const fields = new CustomFields(session);
      const networks = new VsphereNetworks(session, place, fields, this.uri);
      const vms = new VsphereVms(session, place, fields, networks, this.uri);
      return { session, place, fields, networks, vms, customization: new VsphereCustomization(vms, fields, networks, this.uri), clones: new VsphereClones(vms, networks, fields, place, this.uri) };
    } catch (err) {
      await session.logout().catch(() => undefined);
      throw err;
    }
  }
}

/** `[ds] web1/web1.vmx` → { datastore: 'ds', folder: 'web1' } */
function folderOf(path: string): { datastore: string; folder: string } | undefined {
  const m = /^\[([^\]]+)\] ?(.*)\/[^/]*$/.exec(path);
  return m ? { datastore: m[1]!, folder: m[2]! } : undefined;
}
