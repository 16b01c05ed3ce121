/**
 * The many-to-one lab: n source VMs on the isolated production network, each protected onto its
 * own pre-staged target VM on one DR site (this machine), with its own DR identity, and one plan
 * that fails them over in priority groups. The many-to-one test and the failover benchmark build
 * it; removeFleet takes away everything it made.
 *
 * Identity scheme, one member per index i = 1..n (at most 150):
 *   protection and source VM  PREFIX-NN          (NN = i, two decimal digits)
 *   target VM and hostname    PREFIX-NN-dr
 *   MAC                       52:54:00:d8:XX:II  (XX = a byte of the prefix's hash, II = i in hex;
 *                                                 lab.yaml's targets use 52:54:00:d7:…)
 *   address                   192.0.2.(100+i)/24, gateway 192.0.2.1, dns 192.0.2.53 (TEST-NET-1)
 *   DR network                PREFIX-dr          (isolated; its bridge name is derived by the
 *                                                 adapter, shortened with a hash past 15 chars)
 */
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { VmdrError } from '../../hypervisors/errors.js';
import type { HypervisorAdapter, NetworkInfo } from '../../hypervisors/types.js';
import { ensureProductionVm, LAB_DIR, labBoot, type ProductionVm } from './production.js';

export const FLEET_MAX = 150;
/** The guest's ready line, as a protection's serial health check. */
export const FLEET_HEALTH = { serial: '^VMDR-GUEST ready', timeout: '2m' };
/** The lab guest boots in 128 MiB (64 MiB does not: its console stays empty). */
export const FLEET_TARGET_MEMORY_MIB = 128;
/** The targets' kernel boot: the lab guest's (its no_timer_check lets six TCG guests boot at once on two cores). */
export const FLEET_BOOT = labBoot();

export interface FleetOptions {
  n: number;
  prefix: string;
  /** Holds the state database, the replicas and the receiver's credentials. */
  dir: string;
  /** The plan's priority groups, by size, in order: [2, 4] = members 1-2, then 3-6. */
  groups: number[];
  /** How many VMs of a group start at once (the plan's default when omitted). */
  parallel?: number;
  /** The DR receiver's port on 127.0.0.1. */
  port: number;
}

export interface FleetMember {
  index: number;
  protection: string;
  source: string;
  target: string;
  hostname: string;
  mac: string;
  /** With prefix: 192.0.2.(100+i)/24. */
  address: string;
}

export const fleetNetwork = (prefix: string) => `${prefix}-dr`;
export const fleetPlan = (prefix: string) => `${prefix}-plan`;

export function fleetMembers(options: Pick<FleetOptions, 'n' | 'prefix'>): FleetMember[] {
  const { n, prefix } = options;
  if (!Number.isInteger(n) || n < 1 || n > FLEET_MAX) throw new RangeError(`a fleet has 1 to ${FLEET_MAX} VMs, not ${n}`);
  const hashByte = createHash('sha256').update(prefix).digest('hex').slice(0, 2);
  return Array.from({ length: n }, (_, k) => {
    const index = k + 1;
    const name = `${prefix}-${String(index).padStart(2, '0')}`;
    return {
      index,
      protection: name,
      source: name,
      target: `${name}-dr`,
      hostname: `${name}-dr`,
      mac: `52:54:00:d8:${hashByte}:${index.toString(16).padStart(2, '0')}`,
      address: `192.0.2.${100 + index}/24`,
    };
  });
}

/** The YAML text of the fleet's config (both sites are qemu:///system). */
export function fleetConfig(options: FleetOptions): string {
  const members = fleetMembers(options);
  const total = options.groups.reduce((a, b) => a + b, 0);
  if (options.groups.some((g) => !Number.isInteger(g) || g < 1) || total !== options.n) {
    throw new RangeError(`group sizes ${JSON.stringify(options.groups)} must be positive and add up to n = ${options.n}`);
  }
  const network = fleetNetwork(options.prefix);
  let next = 0;
  const config = {
    version: 1,
    state: { path: join(options.dir, 'state.db') },
    sites: [
      { name: 'prod', uri: 'qemu:///system' },
      {
        name: 'dr',
        uri: 'qemu:///system',
        storage: join(options.dir, 'replicas'),
        receiver: { listen: `127.0.0.1:${options.port}`, credentials: join(options.dir, 'receiver') },
      },
    ],
    protections: members.map((m) => ({
      name: m.protection,
      source: { site: 'prod', vm: m.source },
      target: {
        site: 'dr',
        vm: m.target,
        memoryMiB: FLEET_TARGET_MEMORY_MIB,
        boot: FLEET_BOOT,
        hostname: m.hostname,
        nics: [{ mac: m.mac, network, addresses: [m.address], gateway: '192.0.2.1', dns: ['192.0.2.53'] }],
      },
      health: FLEET_HEALTH,
    })),
    plans: [
      {
        name: fleetPlan(options.prefix),
        groups: options.groups.map((size, g) => {
          const vms = members.slice(next, next + size).map((m) => m.protection);
          next += size;
          return { name: `group-${g + 1}`, vms, ...(options.parallel ? { parallel: options.parallel } : {}) };
        }),
      },
    ],
  };
  return `# The many-to-one lab (scripts/lab/fleet.ts): ${options.n} source VMs, each onto its own target on one DR site.\n${stringify(config, { aliasDuplicateObjects: false })}`;
}

/** The fleet's isolated DR network, labelled so removeFleet (and only it) takes it away. */
export function ensureFleetNetwork(adapter: HypervisorAdapter, prefix: string): Promise<NetworkInfo> {
  return adapter.ensureIsolatedNetwork({ name: fleetNetwork(prefix), labels: { role: 'lab-fleet', fleet: prefix } });
}

/** Defines the missing source VMs and starts them all at once; resolves when every guest is ready. */
export function ensureFleetSources(adapter: HypervisorAdapter, names: string[]): Promise<ProductionVm[]> {
  return Promise.all(names.map((name) => ensureProductionVm(adapter, name)));
}

/**
 * Removes what the fleet made, whatever state it is in: its sources and targets, and every VM
 * that carries a label naming one of its protections or its plan (anything a failover or a drill
 * left behind), forced off and undefined; its DR network and every vmdr network labelled with one
 * of those names; the fleet's directory and its sources' disks. The lab's production network is
 * shared by every lab VM and stays. Every step runs; the failures are thrown together at the end.
 */
export async function removeFleet(adapter: HypervisorAdapter, options: Pick<FleetOptions, 'n' | 'prefix' | 'dir'>): Promise<void> {
  const members = fleetMembers(options);
  const ours = new Set(members.map((m) => m.protection));
  const names = new Set([...members.flatMap((m) => [m.source, m.target]), fleetNetwork(options.prefix)]);
  const mine = (name: string, labels: Record<string, string> = {}) =>
    names.has(name) || Object.values(labels).some((v) => ours.has(v) || v === options.prefix || v === fleetPlan(options.prefix));
  const failures: string[] = [];
  const attempt = async (what: string, step: () => Promise<unknown>) => {
    await step().catch((err: unknown) => {
      if (err instanceof VmdrError && (err.code === 'VM_NOT_FOUND' || err.code === 'NETWORK_NOT_FOUND')) return;
      failures.push(`${what}: ${(err as Error).message}`);
    });
  };

  const vms = (await adapter.listVms()).filter((vm) => mine(vm.name, vm.labels));
  await Promise.all(
    vms.map((vm) =>
      attempt(`remove VM ${vm.name}`, async () => {
        await adapter.stop(vm.name, { mode: 'force' });
        await adapter.undefine(vm.name);
      }),
    ),
  );
  const networks = (await adapter.listNetworks()).filter((n) => n.labels && mine(n.name, n.labels));
  for (const network of networks) await attempt(`remove network ${network.name}`, () => adapter.removeNetwork(network.name));
  for (const m of members) await attempt(`remove ${m.source}'s disk`, () => rm(join(LAB_DIR, 'production', m.source), { recursive: true, force: true }));
  await attempt(`remove ${options.dir}`, () => rm(options.dir, { recursive: true, force: true }));
  if (failures.length) throw new Error(`removing the fleet ${options.prefix} left things behind: ${failures.join('; ')}`);
}
