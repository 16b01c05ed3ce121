/**
 * A VM's virtual hardware as vSphere describes it (`config.hardware.device`), read into vmdr's
 * disks and NICs, and the device changes vmdr asks of ReconfigVM_Task / CreateVM_Task.
 *
 * A disk's guest target is where it sits, `scsi0:1` (controller bus : unit), unless vmdr was told
 * a name for it when it made the disk (a pre-staged target's `vda`, named after its source's
 * disk): that name is kept in the VM's extraConfig as `vmdr.disk.scsi0:1 = vda`, which lives in
 * the .vmx and so survives an unregister and a register, and the disk is reported by it, so the
 * plugin matches a target's disks with its source's by the same names on every hypervisor.
 *
 * Every object is built in the WSDL's element order (a real vCenter checks it).
 */
import type { DiskInfo, DiskSpec, NicInfo } from '../types.js';
import { items } from './property-values.js';
import type { MoRef } from './soap.js';

type Device = Record<string, unknown> & { _type: string; key: string };

export const DISK_NAME_PREFIX = 'vmdr.disk.';

const SCSI_CONTROLLERS = new Set(['ParaVirtualSCSIController', 'VirtualLsiLogicController', 'VirtualLsiLogicSASController', 'VirtualBusLogicController']);
const CONTROLLER_BUS: Record<string, string> = {
  VirtualIDEController: 'ide',
  VirtualAHCIController: 'sata',
  VirtualSATAController: 'sata',
  VirtualNVMEController: 'nvme',
};
const NIC_MODELS: Record<string, string> = {
  VirtualVmxnet3: 'vmxnet3',
  VirtualVmxnet2: 'vmxnet2',
  VirtualVmxnet: 'vmxnet',
  VirtualE1000: 'e1000',
  VirtualE1000e: 'e1000e',
  VirtualPCNet32: 'pcnet32',
  VirtualSriovEthernetCard: 'sriov',
  VirtualVmxnet3Vrdma: 'vmxnet3vrdma',
};
/** vmdr's model names (libvirt's among them) → the vSphere card that stands for them. */
const NIC_TYPES: Record<string, string> = { vmxnet3: 'VirtualVmxnet3', e1000: 'VirtualE1000', e1000e: 'VirtualE1000e', virtio: 'VirtualVmxnet3' };

/** SCSI unit 7 is the controller's own. */
const SCSI_UNITS = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];

export interface VmDisk extends DiskInfo {
  key: number;
  controllerKey: number;
  unitNumber: number;
  /** Where the disk sits, `scsi0:1`: the key of its name in extraConfig. */
  slot: string;
  device: 'disk' | 'cdrom';
  capacityInKB: number;
}

export interface VmNic extends NicInfo {
  key: number;
  /** The device as read: an edit sends it back with its identity changed. */
  raw: Device;
}

export interface Hardware {
  disks: VmDisk[];
  nics: VmNic[];
  /** The first SCSI controller: where disks are added. */
  scsi?: { key: number; bus: number; used: Set<number> };
}

/** `names`: slot → name from extraConfig; `portgroups`: DVS port group key → its name. */
export function readHardware(device: unknown, names: Map<string, string>, portgroups: Map<string, string>): Hardware {
  const devices = items<Device>(device);
  const controllers = new Map<number, { bus: string; number: number }>();
  for (const d of devices) {
    const bus = SCSI_CONTROLLERS.has(d._type) ? 'scsi' : CONTROLLER_BUS[d._type];
    if (bus) controllers.set(Number(d.key), { bus, number: Number(d.busNumber ?? 0) });
  }
  const hw: Hardware = { disks: [], nics: [] };
  for (const d of devices) {
    if (d._type === 'VirtualDisk' || d._type === 'VirtualCdrom') {
      const controllerKey = Number(d.controllerKey);
      const unitNumber = Number(d.unitNumber ?? 0);
      const controller = controllers.get(controllerKey);
      const slot = `${controller?.bus ?? 'unknown'}${controller?.number ?? 0}:${unitNumber}`;
      const backing = (d.backing ?? {}) as Record<string, unknown>;
      const capacityInKB = Number(d.capacityInKB ?? 0);
      const bytes = Number(d.capacityInBytes ?? 0) || capacityInKB * 1024;
      const path = typeof backing.fileName === 'string' && backing.fileName !== '' ? backing.fileName : undefined;
      const disk: VmDisk = {
        target: names.get(slot) ?? slot,
        device: d._type === 'VirtualDisk' ? 'disk' : 'cdrom',
        ...(path ? { path } : {}),
        ...(d._type === 'VirtualDisk' ? { format: 'vmdk' } : {}),
        ...(controller ? { bus: controller.bus } : {}),
        // 0 is no size a disk has: the server did not say (the simulator reads no attached VMDK).
        ...(d._type === 'VirtualDisk' && bytes > 0 ? { capacityBytes: bytes } : {}),
        key: Number(d.key),
        controllerKey,
        unitNumber,
        slot,
        capacityInKB,
      };
      hw.disks.push(disk);
    } else if (typeof d.macAddress === 'string' || NIC_MODELS[d._type]) {
      const backing = (d.backing ?? {}) as Record<string, unknown>;
      const port = backing.port as { portgroupKey?: string } | undefined;
      const network = typeof backing.deviceName === 'string' ? backing.deviceName : port?.portgroupKey ? portgroups.get(port.portgroupKey) ?? port.portgroupKey : undefined;
      hw.nics.push({ mac: String(d.macAddress ?? '').toLowerCase(), ...(network ? { network } : {}), model: NIC_MODELS[d._type] ?? d._type, key: Number(d.key), raw: d });
    }
  }
  // Device order changes with every reconfiguration; where a disk sits does not.
  hw.disks.sort((a, b) => (a.bus ?? '').localeCompare(b.bus ?? '') || busOf(a.slot) - busOf(b.slot) || a.unitNumber - b.unitNumber);
  const scsi = [...controllers.entries()].find(([, c]) => c.bus === 'scsi' && c.number === 0) ?? [...controllers.entries()].find(([, c]) => c.bus === 'scsi');
  if (scsi) hw.scsi = { key: scsi[0], bus: scsi[1].number, used: new Set(hw.disks.filter((d) => d.controllerKey === scsi[0]).map((d) => d.unitNumber)) };
  return hw;
}

function busOf(slot: string): number {
  return Number(/(\d+):/.exec(slot)?.[1] ?? 0);
}

/** The slot → name map from a VM's extraConfig (the last value of a key is the current one). */
export function diskNames(extraConfig: unknown): Map<string, string> {
  const names = new Map<string, string>();
  for (const o of items<{ key: string; value?: unknown }>(extraConfig)) {
    if (typeof o.key !== 'string' || !o.key.startsWith(DISK_NAME_PREFIX)) continue;
    const value = o.value;
    if (typeof value === 'string' && value !== '') names.set(o.key.slice(DISK_NAME_PREFIX.length), value);
    else names.delete(o.key.slice(DISK_NAME_PREFIX.length));
  }
  return names;
}

/** A datastore path (`[ds1] web1/web1.vmdk`) rather than a file of the host vmdr runs on. */
export function isDatastorePath(path: string): boolean {
  return /^\[[^\]]+\] ?\S/.test(path);
}

/** `scsi0:3` → unit 3 on bus 0; undefined for a name that is not a slot (vda). */
export function parseSlot(target: string): { bus: number; unit: number } | undefined {
  const m = /^scsi(\d+):(\d+)$/.exec(target);
  return m ? { bus: Number(m[1]), unit: Number(m[2]) } : undefined;
}

/** The first SCSI unit free on a controller that has `used`. */
export function freeUnit(used: Set<number>): number | undefined {
  return SCSI_UNITS.find((u) => !used.has(u));
}

export function scsiControllerSpec(key: number, bus: number): object {
  return { operation: 'add', device: { _type: 'ParaVirtualSCSIController', key, busNumber: bus, sharedBus: 'noSharing' } };
}

/**
 * A disk to add at `controllerKey:unit`: a placeholder made empty and thin (a host path's disk:
 * vSphere cannot open files of the host vmdr runs on) at `placeholder`, or an existing datastore
 * file attached as it is.
 */
export function diskAddSpec(disk: Pick<DiskSpec, 'path' | 'sizeBytes'>, at: { key: number; controllerKey: number; unit: number; datastore: MoRef; placeholder?: string }): object {
  const create = !isDatastorePath(disk.path);
  const kb = Math.ceil((disk.sizeBytes ?? 0) / 1024);
  return {
    operation: 'add',
    ...(create ? { fileOperation: 'create' } : {}),
    device: {
      _type: 'VirtualDisk',
      key: at.key,
      backing: {
        _type: 'VirtualDiskFlatVer2BackingInfo',
        fileName: create ? at.placeholder : disk.path,
        ...(create ? { datastore: at.datastore } : {}),
        diskMode: 'persistent',
        ...(create ? { thinProvisioned: true } : {}),
      },
      controllerKey: at.controllerKey,
      unitNumber: at.unit,
      capacityInKB: kb,
      ...(disk.sizeBytes ? { capacityInBytes: disk.sizeBytes } : {}),
    },
  };
}

/**
 * Takes a disk off the VM. Its file stays (it may be a replica's boot disk or placeholder) unless
 * `destroy`: a linked clone's own child disk, which nothing else uses.
 */
export function diskRemoveSpec(disk: VmDisk, destroy = false): object {
  return { operation: 'remove', ...(destroy ? { fileOperation: 'destroy' } : {}), device: { _type: 'VirtualDisk', key: disk.key, controllerKey: disk.controllerKey, unitNumber: disk.unitNumber, capacityInKB: disk.capacityInKB } };
}

export type NetworkBacking =
  | { kind: 'standard'; name: string; ref: MoRef }
  | { kind: 'dvs'; name: string; ref: MoRef; switchUuid: string; portgroupKey: string };

function backingOf(network: NetworkBacking): object {
  return network.kind === 'standard'
    ? { _type: 'VirtualEthernetCardNetworkBackingInfo', deviceName: network.name, network: network.ref }
    : { _type: 'VirtualEthernetCardDistributedVirtualPortBackingInfo', port: { switchUuid: network.switchUuid, portgroupKey: network.portgroupKey } };
}

export function nicAddSpec(key: number, network: NetworkBacking, mac: string | undefined, model: string | undefined): object {
  return {
    operation: 'add',
    device: {
      _type: NIC_TYPES[model ?? 'vmxnet3'] ?? 'VirtualVmxnet3',
      key,
      backing: backingOf(network),
      connectable: { startConnected: true, allowGuestControl: true, connected: false },
      addressType: mac ? 'manual' : 'generated',
      ...(mac ? { macAddress: mac.toLowerCase() } : {}),
    },
  };
}

/** The NIC as it is, with another MAC and/or network: an edit keeps its key, type and slot. */
export function nicEditSpec(nic: VmNic, change: { mac?: string; network?: NetworkBacking }): object {
  const raw = nic.raw;
  const mac = change.mac?.toLowerCase();
  return {
    operation: 'edit',
    device: {
      _type: raw._type,
      key: raw.key,
      ...(raw.deviceInfo ? { deviceInfo: raw.deviceInfo } : {}),
      backing: change.network ? backingOf(change.network) : raw.backing,
      ...(raw.connectable ? { connectable: raw.connectable } : {}),
      ...(raw.slotInfo ? { slotInfo: raw.slotInfo } : {}),
      ...(raw.controllerKey !== undefined ? { controllerKey: raw.controllerKey } : {}),
      ...(raw.unitNumber !== undefined ? { unitNumber: raw.unitNumber } : {}),
      addressType: mac ? 'manual' : raw.addressType,
      macAddress: mac ?? raw.macAddress,
    },
  };
}

/** extraConfig entries naming disks by slot (an empty name forgets one). */
export function diskNameOptions(names: Record<string, string>): object[] {
  return Object.entries(names).map(([slot, name]) => ({ key: DISK_NAME_PREFIX + slot, value: stringValue(name) }));
}

/** An xsd:anyType value that is a string (OptionValue.value). */
export function stringValue(value: string): object {
  return { _type: 'xsd:string', _value: value };
}
