/**
 * Virtual machines on a vSphere endpoint: finding them (name, instance UUID, inventory path),
 * reading them (one PropertyCollector call with only the properties vmdr shows), making them
 * (CreateVM_Task in vmdr's folder, pool and datastore; RegisterVM_Task from files already on a
 * datastore), power, and reconfiguration (ReconfigVM_Task).
 */
import { CleanupFailed, DefinitionRejected, DiskNotFound, InvalidPowerState, StopTimedOut, Unsupported, VmAlreadyExists, VmdrError, VmNotFound } from '../errors.js';
import type { DiskSpec, PowerState, StopOptions, TaskOptions, VmFilter, VmInfo, VmSpec } from '../types.js';
import { diskAddSpec, diskNameOptions, diskNames, diskRemoveSpec, freeUnit, isDatastorePath, nicAddSpec, parseSlot, readHardware, scsiControllerSpec, stringValue, type Hardware, type NetworkBacking } from './devices.js';
import { findVm } from './find.js';
import type { CustomFields } from './labels.js';
import { faultFile, faultType } from './fault-type.js';
import type { VsphereNetworks } from './network.js';
import type { Placement } from './placement.js';
import { items } from './property-values.js';
import { retrieve, type RetrievedObject } from './property-collector.js';
import type { VsphereSession } from './session.js';
import { poll } from './poll.js';
import type { MoRef } from './soap.js';
import { waitForTask } from './task.js';

/** Only what VmInfo shows, and what vmdr's own bookkeeping in extraConfig needs. */
const VM_PATHS = ['name', 'config.instanceUuid', 'runtime.powerState', 'config.hardware.memoryMB', 'config.hardware.numCPU', 'config.hardware.device', 'config.extraConfig', 'customValue', 'config.template', 'config.files.vmPathName'];

/** extraConfig key marking a drill's linked clone (snapshot.ts): undefine destroys those. */
export const CLONE_OF = 'vmdr.clone-of';
/** What guest OS vSphere is told a VM vmdr makes runs: its source's OS is not known here. */
const GUEST_ID = 'otherLinux64Guest';
const DEFAULT_GRACEFUL_TIMEOUT_MS = 60_000;

const POWER_STATES: Record<string, PowerState> = { poweredOn: 'running', poweredOff: 'shutoff', suspended: 'suspended' };

/** A VM as read: what the adapter reports, and what changing it needs. */
export interface VmRecord {
  ref: MoRef;
  info: VmInfo;
  hardware: Hardware;
  customValue: unknown;
  /** `[ds] web1/web1.vmx` */
  vmxPath: string;
  /** The target a drill clone was made from (CLONE_OF), when it is one. */
  cloneOf?: string;
}

export class VsphereVms {
  /** name or id → reference: resolved once, forgotten when the VM turns out gone. */
  private readonly refs = new Map<string, MoRef>();

  constructor(
    readonly session: VsphereSession,
    private readonly place: Placement,
    private readonly fields: CustomFields,
    private readonly networks: VsphereNetworks,
    private readonly uri: string,
  ) {}

  /**
   * With a filter, a first read of every VM's name and power state alone picks the VMs, and only
   * those are read whole (their devices are most of what a VM's read carries).
   */
  async list(filter: VmFilter = {}): Promise<VmInfo[]> {
    const container = this.place.datacenter.vmFolder;
    let found: RetrievedObject[];
    if (filter.names || filter.running) {
      const names = filter.names && new Set(filter.names);
      const picked = (await retrieve(this.session, { type: 'VirtualMachine', paths: ['name', 'runtime.powerState'], container })).filter(
        (f) => (!names || names.has(String(f.props.name))) && (!filter.running || f.props['runtime.powerState'] === 'poweredOn'),
      );
      found = await retrieve(this.session, { type: 'VirtualMachine', paths: VM_PATHS, objects: picked.map((f) => f.ref) });
    } else {
      found = await retrieve(this.session, { type: 'VirtualMachine', paths: VM_PATHS, container });
    }
    const records: VmInfo[] = [];
    const portgroups = await this.portgroupsFor(found.map((f) => f.props['config.hardware.device']));
    for (const f of found) {
      // A template cannot be powered on or failed over to; an inaccessible VM has no config.
      if (f.props['config.template'] === 'true' || f.props['config.template'] === true || f.props['config.instanceUuid'] === undefined) continue;
      records.push((await this.record(f.ref, f.props, portgroups)).info);
    }
    return records;
  }

  /** `vm`: a name, an instance or BIOS UUID, or an inventory path (`/DC0/vm/web1`). */
  async read(vm: string): Promise<VmRecord> {
    return this.withRef(vm, async (ref) => {
      const [found] = await retrieve(this.session, { type: 'VirtualMachine', paths: VM_PATHS, objects: [ref] });
      if (!found) throw new VmNotFound(vm, this.uri);
      return this.record(ref, found.props, await this.portgroupsFor([found.props['config.hardware.device']]));
    });
  }

  async powerState(vm: string): Promise<PowerState> {
    return this.withRef(vm, async (ref) => {
      const [found] = await retrieve(this.session, { type: 'VirtualMachine', paths: ['runtime.powerState'], objects: [ref] });
      if (!found) throw new VmNotFound(vm, this.uri);
      return POWER_STATES[String(found.props['runtime.powerState'])] ?? 'unknown';
    });
  }

  /**
   * A new VM from `spec` in vmdr's folder, pool and datastore, its files in `[ds] <name>/`. When
   * that folder already holds the VM's .vmx (vmdr undefined it and kept its files, which may be a
   * replica's), the VM is registered from it instead: it comes back with the disks and NICs its
   * files say, and its labels from `spec`.
   */
  async define(spec: VmSpec, task: TaskOptions = {}): Promise<MoRef> {
    if (spec.boot.kind === 'kernel') throw new Unsupported(`booting VM ${JSON.stringify(spec.name)} straight into a kernel and initrd (a vSphere VM boots from its disks)`, this.uri);
    for (const d of spec.disks) {
      if (d.device === 'cdrom' || d.readonly) throw new Unsupported(`a ${d.device === 'cdrom' ? 'CD-ROM' : 'read-only disk'} (${d.path}) on VM ${JSON.stringify(spec.name)}`, this.uri);
    }
    if (await this.exists(spec.name)) throw new VmAlreadyExists(spec.name, this.uri);
    const networks: NetworkBacking[] = [];
    for (const nic of spec.nics) networks.push(await this.networks.resolve(nic.network));
    const ds = this.place.datastore;
    const vmxPath = `[${ds.name}] ${spec.name}/${spec.name}.vmx`;
    const controller = -100;
    const changes: object[] = [scsiControllerSpec(controller, 0)];
    const names: Record<string, string> = {};
    const used = new Set<number>();
    spec.disks.forEach((disk, i) => {
      const slot = parseSlot(disk.target ?? '');
      const unit = slot?.bus === 0 ? slot.unit : freeUnit(used);
      if (unit === undefined || used.has(unit)) throw new Unsupported(`disk ${disk.target ?? i} of VM ${JSON.stringify(spec.name)} (vmdr puts at most 15 disks on one SCSI controller)`, this.uri);
      used.add(unit);
      if (disk.target && !slot) names[`scsi0:${unit}`] = disk.target;
      requireSize(spec.name, disk, this.uri);
      changes.push(diskAddSpec(disk, { key: -200 - i, controllerKey: controller, unit, datastore: ds.ref, placeholder: `[${ds.name}] ${spec.name}/${spec.name}-${fileSafe(disk.target ?? `disk${i}`)}.vmdk` }));
    });
    spec.nics.forEach((nic, i) => changes.push(nicAddSpec(-300 - i, networks[i]!, nic.mac, nic.model)));
    const config = {
      name: spec.name,
      guestId: GUEST_ID,
      files: { vmPathName: vmxPath },
      numCPUs: spec.vcpus,
      memoryMB: spec.memoryMiB,
      deviceChange: changes,
      extraConfig: diskNameOptions(names),
    };
    let ref: MoRef;
    try {
      ref = (await this.task('CreateVM_Task', this.place.folder, { config, pool: this.place.pool }, 'define', spec.name, task)) as MoRef;
    } catch (err) {
      // The .vmx itself, not a disk file left in the folder (ESXi names it by datastore path, the simulator by its own path).
      if (faultType(err) !== 'FileAlreadyExists' || !faultFile(err)?.endsWith(`${spec.name}/${spec.name}.vmx`)) throw err;
      ref = await this.register(vmxPath, spec.name, task);
    }
    this.refs.set(spec.name, ref);
    try {
      await this.fields.replaceLabels(ref, 'VirtualMachine', undefined, spec.labels ?? {});
    } catch (err) {
      // Its files stay (they may hold a replica's disks): a new define registers it again.
      await this.session.call('UnregisterVM', ref, {}, { vm: spec.name }).then(
        () => this.refs.delete(spec.name),
        (cleanup: unknown) => Promise.reject(new CleanupFailed(err, `unregister VM ${spec.name}`, cleanup)),
      );
      throw err;
    }
    return ref;
  }

  /** Registers the VM whose configuration is `vmxPath` (`[ds] web1/web1.vmx`) in vmdr's folder and pool. */
  async register(vmxPath: string, name: string, task: TaskOptions = {}): Promise<MoRef> {
    const ref = (await this.task('RegisterVM_Task', this.place.folder, { path: vmxPath, name, asTemplate: false, pool: this.place.pool }, 'register', name, task)) as MoRef;
    this.refs.set(name, ref);
    return ref;
  }

  async powerOn(vm: string): Promise<void> {
    await this.withRef(vm, (ref) => this.task('PowerOnVM_Task', ref, {}, 'power on', vm));
  }

  /** Pulls the plug; a VM that is off already is left so. */
  async powerOff(vm: string): Promise<void> {
    await this.withRef(vm, (ref) => this.task('PowerOffVM_Task', ref, {}, 'power off', vm)).catch((err: unknown) => {
      if (!(err instanceof VmdrError && err.code === 'INVALID_POWER_STATE')) throw err;
    });
  }

  /**
   * Asks the guest to shut down through VMware Tools, then waits for the VM to be off; see
   * StopOptions for the deadline, forceOnTimeout and the signal. A guest without running Tools
   * cannot be asked: that is the deadline's case at once.
   */
  async stop(vm: string, options: StopOptions): Promise<void> {
    if ((await this.powerState(vm)) === 'shutoff') return;
    if (options.mode === 'force') return this.powerOff(vm);
    const timeoutMs = options.timeoutMs ?? DEFAULT_GRACEFUL_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    let asked = true;
    await this.withRef(vm, (ref) => this.session.call('ShutdownGuest', ref, {}, { vm })).catch((err: unknown) => {
      if (err instanceof VmdrError && err.code === 'INVALID_POWER_STATE') return;
      if (faultType(err) !== 'ToolsUnavailable') throw err;
      asked = false;
    });
    if (asked && (await poll(async () => ((await this.powerState(vm)) === 'shutoff' ? true : undefined), { deadline, ...(options.signal ? { signal: options.signal } : {}) }))) return;
    if (!options.forceOnTimeout) throw new StopTimedOut(vm, this.uri, timeoutMs);
    await this.powerOff(vm);
  }

  /** Removes the VM from the inventory; its files stay on the datastore. */
  async unregister(vm: string): Promise<void> {
    await this.withRef(vm, (ref) => this.session.call('UnregisterVM', ref, {}, { vm }));
    this.forget(vm);
  }

  /** Removes the VM and deletes its files: only for what vmdr made to throw away (a drill's clone). */
  async destroy(vm: string): Promise<void> {
    await this.withRef(vm, (ref) => this.task('Destroy_Task', ref, {}, 'destroy', vm));
    this.forget(vm);
  }

  /** One ReconfigVM_Task; `spec` is a VirtualMachineConfigSpec in WSDL order. */
  async reconfigure(vm: string, spec: object): Promise<void> {
    await this.withRef(vm, (ref) => this.task('ReconfigVM_Task', ref, { spec }, 'reconfigure', vm));
  }

  /**
   * Points disks (by guest target) at other files: each is taken off the VM (its file stays) and
   * the file attached at the same slot, in one reconfiguration. A datastore path is attached as it
   * is; a path of the host vmdr runs on (a replica's base image, which vSphere cannot open) means
   * the disk's placeholder beside the VM's .vmx, made again at the disk's size if it is gone: how a
   * reverted target gets its pre-staged disks back. `destroyReplaced` deletes the files taken off
   * (a linked clone's own child disks, snapshot.ts).
   */
  async setDiskFiles(vm: string, disks: { target: string; path: string }[], options: { destroyReplaced?: boolean } = {}): Promise<void> {
    if (disks.length === 0) return;
    const record = await this.read(vm);
    const attach = (create: boolean) => {
      const changes: object[] = [];
      disks.forEach((d, i) => {
        const disk = record.hardware.disks.find((x) => x.device === 'disk' && (x.target === d.target || x.slot === d.target));
        if (!disk) throw new DiskNotFound(vm, this.uri, d.target);
        const at = { key: -400 - i, controllerKey: disk.controllerKey, unit: disk.unitNumber, datastore: this.place.datastore.ref };
        const file = isDatastorePath(d.path) ? d.path : placeholderPath(record, d.target);
        // Created only when asked, and only for placeholders: a datastore file that is missing is an error.
        const spec = diskAddSpec({ path: create && !isDatastorePath(d.path) ? d.path : file, sizeBytes: disk.capacityBytes }, { ...at, placeholder: file });
        changes.push(diskRemoveSpec(disk, options.destroyReplaced), spec);
      });
      return changes;
    };
    try {
      await this.reconfigure(vm, { deviceChange: attach(false) });
    } catch (err) {
      const missing = err instanceof VmdrError && (err.code === 'VSPHERE_FILE_NOT_FOUND' || faultType(err) === 'FileNotFound');
      if (!missing || disks.every((d) => isDatastorePath(d.path))) throw err;
      await this.reconfigure(vm, { deviceChange: attach(true) });
    }
  }

  /**
   * Adds a disk named `disk.target` (a free slot `scsi0:3`, or a name such as `vdc` given the
   * next free slot): a placeholder of its size beside the VM's .vmx for a host path, or the
   * datastore file as it is.
   */
  async addDisk(vm: string, disk: DiskSpec & { target: string }): Promise<void> {
    if (disk.device === 'cdrom' || disk.readonly) throw new Unsupported(`adding a ${disk.device === 'cdrom' ? 'CD-ROM' : 'read-only disk'} to VM ${JSON.stringify(vm)}`, this.uri);
    const record = await this.read(vm);
    if (record.hardware.disks.some((d) => d.target === disk.target || d.slot === disk.target)) {
      throw new DefinitionRejected(`a disk of VM ${JSON.stringify(vm)}`, this.uri, `it has a disk ${disk.target} already`, { vm, disk: disk.target });
    }
    requireSize(vm, disk, this.uri);
    const changes: object[] = [];
    let scsi = record.hardware.scsi;
    if (!scsi) {
      changes.push(scsiControllerSpec(-100, 0));
      scsi = { key: -100, bus: 0, used: new Set() };
    }
    const slot = parseSlot(disk.target);
    if (slot && slot.bus !== scsi.bus) throw new Unsupported(`disk ${disk.target} on VM ${JSON.stringify(vm)} (vmdr adds disks to SCSI bus ${scsi.bus})`, this.uri);
    const unit = slot ? slot.unit : freeUnit(scsi.used);
    if (unit === undefined || scsi.used.has(unit)) throw new Unsupported(`disk ${disk.target} on VM ${JSON.stringify(vm)} (its SCSI controller has no free unit)`, this.uri);
    changes.push(diskAddSpec(disk, { key: -200, controllerKey: scsi.key, unit, datastore: this.place.datastore.ref, placeholder: placeholderPath(record, disk.target) }));
    const names = slot ? {} : { [`scsi${scsi.bus}:${unit}`]: disk.target };
    await this.reconfigure(vm, { deviceChange: changes, extraConfig: diskNameOptions(names) });
  }

  async requireOff(vm: string, wanted: string): Promise<void> {
    const state = await this.powerState(vm);
    if (state !== 'shutoff') throw new InvalidPowerState(vm, this.uri, state, `stop it before you ${wanted}`);
  }

  /** Runs a *_Task method and waits for it; its result (a reference for CreateVM_Task …). */
  async task(method: string, thisRef: MoRef, args: object, phase: string, vm: string, options: TaskOptions = {}): Promise<unknown> {
    const task = await this.session.call<MoRef>(method, thisRef, args, { vm, ...(options.signal ? { signal: options.signal } : {}) });
    return waitForTask(this.session, task, { phase, subject: { vm }, ...(options.signal ? { signal: options.signal } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  }

  /** Resolves `vm` once and runs `use` on it; errors name the VM as the caller did. */
  async withRef<T>(vm: string, use: (ref: MoRef) => Promise<T>): Promise<T> {
    const cached = this.refs.get(vm);
    const ref = cached ?? (await this.resolve(vm));
    try {
      return await use(ref);
    } catch (err) {
      if (cached && err instanceof VmdrError && err.code === 'VM_NOT_FOUND') {
        // Unregistered and registered again elsewhere since: look it up once more.
        this.refs.delete(vm);
        return this.withRef(vm, use);
      }
      throw this.naming(vm, err);
    }
  }

  private async resolve(vm: string): Promise<MoRef> {
    let ref: MoRef | undefined;
    try {
      ref = await findVm(this.session, this.place.datacenter, vm);
    } catch (err) {
      throw this.naming(vm, err);
    }
    if (!ref) throw new VmNotFound(vm, this.uri);
    this.refs.set(vm, ref);
    return ref;
  }

  /** Drops every name the VM was looked up by (its name, its UUID, a path). */
  private forget(vm: string): void {
    const gone = this.refs.get(vm)?.value;
    for (const [k, v] of this.refs) if (k === vm || v.value === gone) this.refs.delete(k);
  }

  private async exists(name: string): Promise<boolean> {
    return this.resolve(name).then(
      () => true,
      (err: unknown) => (err instanceof VmdrError && err.code === 'VM_NOT_FOUND' ? false : Promise.reject(err)),
    );
  }

  /** The client's typed errors know the managed object, not the name the user gave: put it back. */
  private naming(vm: string, err: unknown): unknown {
    if (!(err instanceof VmdrError) || err.subject.vm === vm) return err;
    if (err.code === 'VM_NOT_FOUND') return new VmNotFound(vm, this.uri, err);
    if (err.code === 'INVALID_POWER_STATE') return new InvalidPowerState(vm, this.uri, String(err.subject.state ?? 'in another power state'), 'the operation needs another power state', err);
    return err;
  }

  private async record(ref: MoRef, props: Record<string, unknown>, portgroups: Map<string, string>): Promise<VmRecord> {
    const extra = props['config.extraConfig'];
    const hardware = readHardware(props['config.hardware.device'], diskNames(extra), portgroups);
    const cloneOf = extraValue(extra, CLONE_OF);
    const info: VmInfo = {
      name: String(props.name),
      id: String(props['config.instanceUuid'] ?? ''),
      powerState: POWER_STATES[String(props['runtime.powerState'])] ?? 'unknown',
      memoryMiB: Number(props['config.hardware.memoryMB'] ?? 0),
      vcpus: Number(props['config.hardware.numCPU'] ?? 0),
      disks: hardware.disks.map(({ target, device, path, format, bus, capacityBytes }) => ({ target, device, ...(path ? { path } : {}), ...(format ? { format } : {}), ...(bus ? { bus } : {}), ...(capacityBytes !== undefined ? { capacityBytes } : {}) })),
      nics: hardware.nics.map(({ mac, network, model }) => ({ mac, ...(network ? { network } : {}), ...(model ? { model } : {}) })),
      labels: await this.fields.labelsOf(props.customValue),
    };
    return { ref, info, hardware, customValue: props.customValue, vmxPath: String(props['config.files.vmPathName'] ?? ''), ...(cloneOf ? { cloneOf } : {}) };
  }

  /** Distributed port groups' names, read only when a NIC is on one. */
  private async portgroupsFor(devices: unknown[]): Promise<Map<string, string>> {
    const onDvs = devices.some((d) => items<{ backing?: { port?: unknown } }>(d).some((x) => x.backing?.port));
    return onDvs ? this.networks.portgroupNames() : new Map();
  }
}

/** The last value of an extraConfig key (the simulator appends a value per reconfiguration). */
export function extraValue(extraConfig: unknown, key: string): string | undefined {
  let found: string | undefined;
  for (const o of items<{ key: string; value?: unknown }>(extraConfig)) {
    if (o.key !== key) continue;
    found = typeof o.value === 'string' && o.value !== '' ? o.value : undefined;
  }
  return found;
}

export function extraOption(key: string, value: string): object {
  return { key, value: stringValue(value) };
}

/** A placeholder needs its size; a datastore file has its own. */
function requireSize(vm: string, disk: DiskSpec, uri: string): void {
  if (isDatastorePath(disk.path) || disk.sizeBytes) return;
  throw new VmdrError('DISK_SIZE_UNKNOWN', `disk ${disk.target ?? disk.path} of VM ${JSON.stringify(vm)} on ${uri} is a file of this host: vSphere gives it an empty disk of its size, and none was given`, {
    subject: { vm, host: uri, disk: disk.target ?? disk.path },
  });
}

/** A placeholder disk's file: beside the VM's .vmx, named after the VM and the disk. */
function placeholderPath(record: VmRecord, target: string): string {
  return `${record.vmxPath.replace(/\/[^/]*$/, '')}/${record.info.name}-${fileSafe(target)}.vmdk`;
}

function fileSafe(name: string): string {
  return name.replace(/[^\w.-]/g, '_');
}
