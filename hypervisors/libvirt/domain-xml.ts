/**
 * A VmSpec becomes domain XML (a template from templates/domains/ plus the spec's boot, disks,
 * NICs, serial console and labels), and domain XML becomes the VmInfo the rest of vmdr sees.
 */
import { HypervisorOperationFailed, TemplateInvalid } from '../errors.js';
import type { DiskInfo, DiskSpec, NicInfo, NicSpec, PowerState, VmInfo, VmSpec } from '../types.js';
import { readLabels, setLabels } from './labels.js';
import { renderTemplate, templatePath, type TemplateValues } from './templates.js';
import { at, buildXml, childElements, element, ensureChild, firstChild, parseGeneratedXml, textElement, textOf, type XmlElement } from './xml.js';

export const DEFAULT_DOMAIN_TEMPLATE = 'libvirt-domain.xml';

/** The <serial> of the disk vmdr attaches as the identity seed: how it finds the seed again. */
export const SEED_SERIAL = 'vmdr-seed';

/** The virtio-serial port name the QEMU guest agent listens on, which libvirt speaks to. */
export const GUEST_AGENT_PORT = 'org.qemu.guest_agent.0';

export async function renderDomainXml(spec: VmSpec): Promise<string> {
  const file = templatePath('domains', spec.template ?? DEFAULT_DOMAIN_TEMPLATE);
  const values: TemplateValues = { name: spec.name, memoryMiB: spec.memoryMiB, vcpus: spec.vcpus };
  if (spec.boot.kind === 'kernel') Object.assign(values, { kernel: spec.boot.kernel, initrd: spec.boot.initrd, cmdline: spec.boot.cmdline });
  const domain = await renderTemplate(file, values);
  if (domain.name !== 'domain') throw new TemplateInvalid(file, `the root element is <${domain.name}>, not <domain>`);

  addBoot(domain, spec);
  const devices = ensureChild(domain, 'devices');
  const cdromBus = /q35/.test(at(domain, 'os', 'type')?.attrs.machine ?? '') ? 'sata' : 'ide';
  const used = new Set(childElements(devices, 'disk').map((d) => firstChild(d, 'target')?.attrs.dev ?? ''));
  for (const disk of spec.disks) devices.children.push(diskElement(disk, used, cdromBus));
  for (const nic of spec.nics) devices.children.push(nicElement(nic));
  if (spec.serialLog) devices.children.push(...serialElements(spec.serialLog));
  if (spec.guestAgent && !hasGuestAgentChannel(devices)) devices.children.push(guestAgentChannel());
  // Every domain vmdr defines carries the labels element, even empty: it marks the VM as vmdr's.
  setLabels(domain, spec.labels ?? {});
  return buildXml(domain);
}

/** A template that already boots its own way (a <kernel> or <boot> in <os>) keeps it. */
function addBoot(domain: XmlElement, spec: VmSpec): void {
  const os = ensureChild(domain, 'os');
  if (firstChild(os, 'kernel') || firstChild(os, 'boot')) return;
  if (spec.boot.kind === 'kernel') {
    os.children.push(textElement('kernel', spec.boot.kernel), textElement('initrd', spec.boot.initrd), textElement('cmdline', spec.boot.cmdline));
  } else {
    os.children.push(element('boot', { dev: 'hd' }));
  }
}

export function diskElement(disk: DiskSpec, used: Set<string>, cdromBus: 'ide' | 'sata', extra: XmlElement[] = []): XmlElement {
  const device = disk.device ?? 'disk';
  const bus = disk.target ? busOf(disk.target) : device === 'cdrom' ? cdromBus : 'virtio';
  const target = disk.target ?? nextTarget(bus === 'virtio' ? 'vd' : bus === 'ide' ? 'hd' : 'sd', used);
  used.add(target);
  return element('disk', { type: 'file', device }, [
    element('driver', { name: 'qemu', type: disk.format }),
    element('source', { file: disk.path }),
    element('target', { dev: target, bus }),
    ...(disk.readonly || device === 'cdrom' ? [element('readonly')] : []),
    ...extra,
  ]);
}

function nicElement(nic: NicSpec): XmlElement {
  return element('interface', { type: 'network' }, [
    ...(nic.mac ? [element('mac', { address: nic.mac.toLowerCase() })] : []),
    element('source', { network: nic.network }),
    element('model', { type: nic.model ?? 'virtio' }),
  ]);
}

/**
 * The console goes to a file (health checks read it). append='on' keeps earlier boots' output, so
 * a reader waiting for a fresh line reads from the file's size before the boot. libvirt adds the
 * matching <console> itself.
 */
function serialElements(path: string): XmlElement[] {
  return [element('serial', { type: 'file' }, [element('source', { path, append: 'on' }), element('target', { port: '0' })])];
}

/** libvirt picks the socket's path and adds the virtio-serial controller itself. */
function guestAgentChannel(): XmlElement {
  return element('channel', { type: 'unix' }, [element('target', { type: 'virtio', name: GUEST_AGENT_PORT })]);
}

function hasGuestAgentChannel(devices: XmlElement): boolean {
  return childElements(devices, 'channel').some((c) => firstChild(c, 'target')?.attrs.name === GUEST_AGENT_PORT);
}

function busOf(target: string): string {
  if (target.startsWith('vd')) return 'virtio';
  if (target.startsWith('hd')) return 'ide';
  return 'sata';
}

/** The first free target of a prefix in libvirt's order: vda … vdz, vdaa … */
export function nextTarget(prefix: string, used: Set<string>): string {
  for (let i = 0; ; i++) {
    const name = prefix + letters(i);
    if (!used.has(name)) return name;
  }
}

function letters(index: number): string {
  let s = '';
  for (let n = index + 1; n > 0; n = Math.floor((n - 1) / 26)) s = String.fromCharCode(97 + ((n - 1) % 26)) + s;
  return s;
}

/** Reads domain XML as libvirt returns it; the power state comes from the caller (domainGetInfo). `vm` names it in an error. */
export function parseDomainXml(xml: string, powerState: PowerState, host: string, vm?: string): VmInfo {
  const domain = parseDomain(xml, host, vm);
  const devices = firstChild(domain, 'devices');
  const vcpu = firstChild(domain, 'vcpu');
  return {
    name: textOf(firstChild(domain, 'name')) ?? '',
    id: textOf(firstChild(domain, 'uuid')) ?? '',
    powerState,
    memoryMiB: Math.round(toBytes(firstChild(domain, 'memory')) / 2 ** 20),
    vcpus: Number(vcpu?.attrs.current ?? textOf(vcpu) ?? 0),
    disks: devices ? childElements(devices, 'disk').filter(isDiskOrCdrom).map(diskInfo) : [],
    nics: devices ? childElements(devices, 'interface').map(nicInfo) : [],
    labels: readLabels(domain) ?? {},
  };
}

export function parseDomain(xml: string, host: string, vm?: string): XmlElement {
  const parsed = parseGeneratedXml(xml);
  if ('error' in parsed) throw new HypervisorOperationFailed(vm ? 'read the domain XML of' : 'read domain XML from', host, `libvirt returned XML that does not parse (${parsed.error})`, vm ? { vm } : {});
  return parsed;
}

export function serialLogOf(domain: XmlElement): string | undefined {
  const devices = firstChild(domain, 'devices');
  if (!devices) return undefined;
  for (const dev of [...childElements(devices, 'serial'), ...childElements(devices, 'console')]) {
    if (dev.attrs.type === 'file') {
      const path = firstChild(dev, 'source')?.attrs.path;
      if (path) return path;
    }
  }
  return undefined;
}

/** A VM has a display when it has a video device (libvirt's model 'none' is a placeholder for none). */
export function hasDisplay(domain: XmlElement): boolean {
  const devices = firstChild(domain, 'devices');
  return !!devices && childElements(devices, 'video').some((v) => (firstChild(v, 'model')?.attrs.type ?? 'vga') !== 'none');
}

export function isSeedDisk(disk: XmlElement): boolean {
  return textOf(firstChild(disk, 'serial')) === SEED_SERIAL;
}

function isDiskOrCdrom(disk: XmlElement): boolean {
  const device = disk.attrs.device ?? 'disk';
  return device === 'disk' || device === 'cdrom';
}

function diskInfo(disk: XmlElement): DiskInfo {
  const source = firstChild(disk, 'source');
  const target = firstChild(disk, 'target');
  const info: DiskInfo = { target: target?.attrs.dev ?? '', device: disk.attrs.device === 'cdrom' ? 'cdrom' : 'disk' };
  const path = source?.attrs.file ?? source?.attrs.dev ?? source?.attrs.name ?? (source?.attrs.volume && `${source.attrs.pool}/${source.attrs.volume}`);
  if (path) info.path = path;
  const format = firstChild(disk, 'driver')?.attrs.type;
  if (format) info.format = format;
  if (target?.attrs.bus) info.bus = target.attrs.bus;
  if (isSeedDisk(disk)) info.identitySeed = true;
  return info;
}

function nicInfo(nic: XmlElement): NicInfo {
  const source = firstChild(nic, 'source');
  const info: NicInfo = { mac: (firstChild(nic, 'mac')?.attrs.address ?? '').toLowerCase() };
  if (source?.attrs.network) info.network = source.attrs.network;
  if (source?.attrs.bridge) info.bridge = source.attrs.bridge;
  const model = firstChild(nic, 'model')?.attrs.type;
  if (model) info.model = model;
  return info;
}

const UNITS: Record<string, number> = {
  b: 1, bytes: 1,
  kb: 1e3, k: 2 ** 10, kib: 2 ** 10,
  mb: 1e6, m: 2 ** 20, mib: 2 ** 20,
  gb: 1e9, g: 2 ** 30, gib: 2 ** 30,
  tb: 1e12, t: 2 ** 40, tib: 2 ** 40,
};

function toBytes(el: XmlElement | undefined): number {
  if (!el) return 0;
  return Number(textOf(el) ?? 0) * (UNITS[(el.attrs.unit ?? 'KiB').toLowerCase()] ?? 2 ** 10);
}
