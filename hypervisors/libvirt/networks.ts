/**
 * libvirt networks. vmdr creates only isolated networks, marks them with its labels, and removes
 * only networks that carry that mark.
 */
import { createHash } from 'node:crypto';
import { NetworkConflict, NotManagedByVmdr } from '../errors.js';
import type { IsolatedNetworkSpec, NetworkInfo } from '../types.js';
import type { NetworkDescription } from './api/procedures.js';
import type { LibvirtConnection } from './connection.js';
import { readLabels, setLabels } from './labels.js';
import { renderTemplate, templatePath } from './templates.js';
import { buildXml, firstChild, parseGeneratedXml, textOf, type XmlElement } from './xml.js';
import { SharedRuns } from '../shared-runs.js';

export const ISOLATED_NETWORK_TEMPLATE = 'isolated.xml';
/** Linux interface names hold at most 15 characters (IFNAMSIZ minus the terminating NUL). */
const IFNAMSIZ = 15;

export class LibvirtNetworks {
  /** One ensure per network name at a time: parallel provisioning must not define it twice. */
  private readonly ensuring = new SharedRuns<NetworkInfo>();

  constructor(private readonly conn: LibvirtConnection) {}

  private get uri(): string {
    return this.conn.uri;
  }

  async list(): Promise<NetworkInfo[]> {
    return (await this.conn.call({ operation: 'list networks' }, 'describeAllNetworks')).map((n) => this.info(n));
  }

  /** Fails with NetworkNotFound when there is no such network. */
  async get(name: string): Promise<NetworkInfo> {
    return this.info(await this.conn.call({ operation: 'read network', network: name }, 'describeNetwork', name));
  }

  ensureIsolated(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    return this.ensuring.run(spec.name, () => this.ensureIsolatedNow(spec));
  }

  private async ensureIsolatedNow(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    const existing = await this.get(spec.name).catch((err: unknown) => {
      if ((err as { code?: string }).code === 'NETWORK_NOT_FOUND') return undefined;
      throw err;
    });
    if (existing) {
      if (!existing.isolated) throw new NetworkConflict(spec.name, this.uri, 'exists but is not isolated (it has a <forward> or an <ip>); vmdr will not put guests on it as an isolated network');
      if (spec.bridge && existing.bridge !== spec.bridge) {
        throw new NetworkConflict(spec.name, this.uri, `exists with bridge ${existing.bridge ?? '(none)'}, not ${spec.bridge}`);
      }
      if (!existing.active) {
        // Found down: the host restarted and nothing brought it back (made before vmdr set autostart).
        await this.conn.call({ operation: 'start network', network: spec.name }, 'startNetwork', spec.name);
        await this.conn.call({ operation: 'autostart network', network: spec.name }, 'setNetworkAutostart', spec.name, true);
      }
      return { ...existing, active: true };
    }

    const bridge = spec.bridge ?? bridgeNameFor(spec.name);
    if (bridge.length > IFNAMSIZ) throw new NetworkConflict(spec.name, this.uri, `cannot use bridge ${bridge}: Linux bridge names hold at most ${IFNAMSIZ} characters`);
    const network = await renderTemplate(templatePath('networks', ISOLATED_NETWORK_TEMPLATE), { name: spec.name, bridge });
    setLabels(network, spec.labels ?? {});
    // Defined, started and marked autostart in one call: a host that restarts brings the network
    // back before it starts VMs on it (a fenced source started by failback, a DR VM by its
    // autostart). A definition that would not start is taken back so a retry starts clean.
    await this.conn.call({ operation: 'define network', network: spec.name }, 'defineNetwork', buildXml(network), { start: true, autostart: true });
    return this.get(spec.name);
  }

  /** Destroys and undefines a network vmdr made; refuses any other. */
  async remove(name: string): Promise<void> {
    const info = await this.get(name);
    if (!info.labels) throw new NotManagedByVmdr('network', name, this.uri, { network: name });
    await this.conn.call({ operation: 'remove network', network: name }, 'removeNetwork', name);
  }

  /**
   * The live XML: for an isolated network it differs from the persistent one only in what libvirt
   * adds at start (a MAC for the bridge).
   */
  private info(n: NetworkDescription): NetworkInfo {
    const parsed = parseGeneratedXml(n.xml);
    if ('error' in parsed) throw new NetworkConflict(n.name, this.uri, `has XML vmdr cannot read (${parsed.error})`);
    return describe(parsed, n.active);
  }
}

function describe(network: XmlElement, active: boolean): NetworkInfo {
  const info: NetworkInfo = {
    name: textOf(firstChild(network, 'name')) ?? '',
    active,
    isolated: !firstChild(network, 'forward') && !firstChild(network, 'ip'),
  };
  const bridge = firstChild(network, 'bridge')?.attrs.name;
  if (bridge) info.bridge = bridge;
  const labels = readLabels(network);
  if (labels) info.labels = labels;
  return info;
}

/**
 * The network's own name when it is a usable interface name; otherwise its first characters and a
 * hash of the whole name, so two long names with a common start still get different bridges.
 */
export function bridgeNameFor(network: string): string {
  const clean = network.replace(/[^A-Za-z0-9_-]/g, '-');
  if (clean.length <= IFNAMSIZ && clean === network) return clean;
  const hash = createHash('sha256').update(network).digest('hex').slice(0, 6);
  return `${clean.slice(0, IFNAMSIZ - hash.length - 1)}-${hash}`;
}
