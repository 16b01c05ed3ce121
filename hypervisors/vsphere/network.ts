/**
 * Networks on a vSphere endpoint: standard port groups (`Network` objects) and distributed port
 * groups, found by name in the datacenter; and the isolated networks vmdr makes for drill bubbles.
 *
 * An isolated network is a standard port group on a vSwitch of its own with no uplinks (no
 * physical NIC), named `vmdr-…`: nothing put on it leaves the host. It is made on every host of
 * the pool's cluster, so that a VM DRS or HA moves finds it wherever it lands, and removed from
 * all of them. Only such networks are reported isolated and only they are removed.
 */
import { createHash } from 'node:crypto';
import { NetworkConflict, NetworkNotFound, NotManagedByVmdr } from '../errors.js';
import type { IsolatedNetworkSpec, NetworkInfo } from '../types.js';
import type { NetworkBacking } from './devices.js';
import { faultType } from './fault-type.js';
import type { CustomFields } from './labels.js';
import type { Placement } from './placement.js';
import { items } from './property-values.js';
import { retrieve } from './property-collector.js';
import { poll } from './poll.js';
import type { VsphereSession } from './session.js';
import type { MoRef } from './soap.js';
import { SharedRuns } from '../shared-runs.js';

const VSWITCH_PREFIX = 'vmdr-';
/** ESXi's limit on a vSwitch's name. */
const VSWITCH_NAME_MAX = 31;
const VSWITCH_PORTS = 128;
const NETWORK_OBJECT_WAIT_MS = 5_000;

interface HostNetworks {
  host: MoRef;
  system: MoRef;
  vswitches: { name: string; pnics: number }[];
  portgroups: { name: string; vswitch: string }[];
}

export class VsphereNetworks {
  private readonly ensuring = new SharedRuns<NetworkInfo>();

  constructor(
    private readonly session: VsphereSession,
    private readonly place: Placement,
    private readonly fields: CustomFields,
    private readonly uri: string,
  ) {}

  /** What a NIC on the network `name` is backed by; NetworkNotFound when the datacenter has none. */
  async resolve(name: string): Promise<NetworkBacking> {
    const [standard] = (await this.standardNetworks()).filter((n) => n.props.name === name);
    if (standard) return { kind: 'standard', name, ref: standard.ref };
    const portgroup = (await this.portgroups()).find((p) => p.name === name);
    if (!portgroup) throw new NetworkNotFound(name, this.uri);
    return { kind: 'dvs', name, ref: portgroup.ref, switchUuid: portgroup.switchUuid, portgroupKey: portgroup.key };
  }

  /** Distributed port groups' keys → names: how a NIC on one names its network. */
  async portgroupNames(): Promise<Map<string, string>> {
    return new Map((await this.portgroups()).map((p) => [p.key, p.name]));
  }

  async list(): Promise<NetworkInfo[]> {
    const hosts = await this.hostNetworks();
    const networks: NetworkInfo[] = [];
    for (const n of await this.standardNetworks()) networks.push(await this.describe(String(n.props.name), n.props.customValue, hosts));
    for (const p of await this.portgroups()) networks.push({ name: p.name, active: true, isolated: false });
    return networks;
  }

  /** Concurrent calls for one name (a plan's VMs in one bubble) share one run. */
  ensureIsolated(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    return this.ensuring.run(spec.name, () => this.ensureIsolatedNow(spec));
  }

  private async ensureIsolatedNow(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    const vswitch = spec.bridge ?? vswitchNameFor(spec.name);
    if (!vswitch.startsWith(VSWITCH_PREFIX)) throw new NetworkConflict(spec.name, this.uri, `cannot be made on vSwitch ${vswitch}: vmdr's vSwitches are named ${VSWITCH_PREFIX}…`);
    let hosts = await this.hostNetworks();
    const existing = (await this.standardNetworks()).find((n) => n.props.name === spec.name);
    const carrying = hosts.flatMap((h) => h.portgroups.filter((p) => p.name === spec.name));
    if ((existing || carrying.length) && carrying.some((p) => p.vswitch !== vswitch)) {
      throw new NetworkConflict(spec.name, this.uri, `exists on vSwitch ${carrying.find((p) => p.vswitch !== vswitch)!.vswitch}, not on vmdr's isolated vSwitch ${vswitch}`);
    }
    if (!existing && (await this.portgroups()).some((p) => p.name === spec.name)) {
      throw new NetworkConflict(spec.name, this.uri, 'exists as a distributed port group; vmdr will not put guests on it as an isolated network');
    }
    for (const h of hosts) {
      const sw = h.vswitches.find((s) => s.name === vswitch);
      if (sw && sw.pnics > 0) throw new NetworkConflict(spec.name, this.uri, `has vSwitch ${vswitch} with uplinks on host ${h.host.value}: it is not isolated`);
      if (!sw) await this.tolerating(['AlreadyExists'], () => this.session.call('AddVirtualSwitch', h.system, { vswitchName: vswitch, spec: { numPorts: VSWITCH_PORTS } }));
      if (!h.portgroups.some((p) => p.name === spec.name)) await this.addPortGroup(h.system, spec.name, vswitch);
    }
    const network = await this.waitForNetwork(spec.name);
    await this.fields.replaceLabels(network.ref, 'Network', network.props.customValue, spec.labels ?? {});
    hosts = await this.hostNetworks();
    const [labelled] = (await this.standardNetworks()).filter((n) => n.props.name === spec.name);
    return this.describe(spec.name, labelled?.props.customValue, hosts);
  }

  async remove(name: string): Promise<void> {
    const hosts = await this.hostNetworks();
    const network = (await this.standardNetworks()).find((n) => n.props.name === name);
    const carrying = hosts.filter((h) => h.portgroups.some((p) => p.name === name));
    if (!network && carrying.length === 0) throw new NetworkNotFound(name, this.uri);
    const info = await this.describe(name, network?.props.customValue, hosts);
    if (!info.labels) throw new NotManagedByVmdr('network', name, this.uri, { network: name });
    // Its vSwitch from whichever host carries it: a host that lacks the port group may still have the vSwitch.
    const vswitch = info.bridge!;
    for (const h of hosts) {
      // Another vmdr removing the same bubble at once leaves NotFound: gone is what was asked.
      if (h.portgroups.some((p) => p.name === name)) await this.tolerating(['NotFound'], () => this.session.call('RemovePortGroup', h.system, { pgName: name }));
      const others = h.portgroups.filter((p) => p.vswitch === vswitch && p.name !== name);
      if (others.length === 0 && h.vswitches.some((s) => s.name === vswitch)) await this.tolerating(['NotFound'], () => this.session.call('RemoveVirtualSwitch', h.system, { vswitchName: vswitch }));
    }
  }

  /**
   * A port group of the name on any host makes it vmdr's (labels present) when it sits on a
   * `vmdr-` vSwitch; isolated when that vSwitch has no uplink on any host.
   */
  private async describe(name: string, customValue: unknown, hosts: HostNetworks[]): Promise<NetworkInfo> {
    const on = hosts.flatMap((h) => h.portgroups.filter((p) => p.name === name).map((p) => ({ h, vswitch: p.vswitch })));
    const bridge = on[0]?.vswitch;
    const ours = on.length > 0 && on.every((o) => o.vswitch.startsWith(VSWITCH_PREFIX));
    const isolated = ours && on.every((o) => (o.h.vswitches.find((s) => s.name === o.vswitch)?.pnics ?? 0) === 0);
    return { name, ...(bridge ? { bridge } : {}), active: true, isolated, ...(ours ? { labels: await this.fields.labelsOf(customValue) } : {}) };
  }

  /**
   * vCenter has one Network object per port group name, shared by the hosts that carry it; the
   * simulator refuses a second host's port group of a name it already has (DuplicateName) and
   * keeps it on the first host only: the Network exists, which is what that fault says.
   */
  private addPortGroup(system: MoRef, name: string, vswitch: string): Promise<void> {
    return this.tolerating(['DuplicateName', 'AlreadyExists'], () => this.session.call('AddPortGroup', system, { portgrp: { name, vlanId: 0, vswitchName: vswitch, policy: {} } }));
  }

  /** Runs `call`; a fault of one of these types means the host is already as asked. */
  private async tolerating(faults: string[], call: () => Promise<unknown>): Promise<void> {
    try {
      await call();
    } catch (err) {
      const type = faultType(err);
      if (type === undefined || !faults.includes(type)) throw err;
    }
  }

  /** vCenter makes the Network object of a new port group shortly after the host has it. */
  private async waitForNetwork(name: string): Promise<{ ref: MoRef; props: Record<string, unknown> }> {
    const found = await poll(async () => (await this.standardNetworks()).find((n) => n.props.name === name), { deadline: Date.now() + NETWORK_OBJECT_WAIT_MS, intervalMs: 250 });
    if (!found) throw new NetworkNotFound(name, this.uri);
    return found;
  }

  private standardNetworks() {
    return retrieve(this.session, { type: 'Network', paths: ['name', 'customValue'], container: this.place.datacenter.networkFolder }).then((all) =>
      // A container view of Network includes its subtypes.
      all.filter((n) => n.ref.type === 'Network'),
    );
  }

  private async portgroups(): Promise<{ ref: MoRef; name: string; key: string; switchUuid: string }[]> {
    const groups = await retrieve(this.session, { type: 'DistributedVirtualPortgroup', paths: ['name', 'key', 'config.distributedVirtualSwitch'], container: this.place.datacenter.networkFolder });
    if (groups.length === 0) return [];
    const switches = new Map<string, string>();
    for (const s of await retrieve(this.session, { type: 'DistributedVirtualSwitch', paths: ['uuid'], container: this.place.datacenter.networkFolder })) switches.set(s.ref.value, String(s.props.uuid));
    return groups.map((g) => {
      const dvs = g.props['config.distributedVirtualSwitch'] as MoRef | undefined;
      return { ref: g.ref, name: String(g.props.name), key: String(g.props.key), switchUuid: (dvs && switches.get(dvs.value)) ?? '' };
    });
  }

  private async hostNetworks(): Promise<HostNetworks[]> {
    const hosts = await retrieve(this.session, { type: 'HostSystem', paths: ['configManager.networkSystem'], objects: this.place.hosts });
    const systems = hosts.map((h) => ({ host: h.ref, system: h.props['configManager.networkSystem'] as MoRef })).filter((h) => h.system);
    const infos = await retrieve(this.session, { type: 'HostNetworkSystem', paths: ['networkInfo'], objects: systems.map((s) => s.system) });
    return systems.map((s) => {
      const info = (infos.find((i) => i.ref.value === s.system.value)?.props.networkInfo ?? {}) as Record<string, unknown>;
      return {
        ...s,
        vswitches: items<{ name: string; pnic?: unknown }>(info.vswitch).map((v) => ({ name: v.name, pnics: items(v.pnic).length })),
        portgroups: items<{ spec?: { name: string; vswitchName: string } }>(info.portgroup)
          .filter((p) => p.spec)
          .map((p) => ({ name: p.spec!.name, vswitch: p.spec!.vswitchName })),
      };
    });
  }
}

/** `vmdr-<name>` (the name's own `vmdr-` not doubled), shortened with a digest past ESXi's limit. */
export function vswitchNameFor(network: string): string {
  const base = network.startsWith(VSWITCH_PREFIX) ? network : `${VSWITCH_PREFIX}${network}`;
  if (base.length <= VSWITCH_NAME_MAX) return base;
  const digest = createHash('sha256').update(network).digest('hex').slice(0, 8);
  return `${base.slice(0, VSWITCH_NAME_MAX - 9)}-${digest}`;
}
