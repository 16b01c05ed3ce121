/**
 * libvirt networks through virsh net-* (the binding has no network calls). vmdr creates only
 * isolated networks, marks them with its labels, and removes only networks that carry that mark.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CleanupFailed, NetworkConflict, NotManagedByVmdr, Unsupported, VmdrError } from '../errors.js';
import type { IsolatedNetworkSpec, NetworkInfo } from '../types.js';
import { readLabels, setLabels } from './labels.js';
import { renderTemplate, templatePath } from './templates.js';
import { virsh } from './virsh.js';
import { buildXml, firstChild, parseXml, textOf, type XmlElement } from './xml.js';

export const ISOLATED_NETWORK_TEMPLATE = 'isolated.xml';
/** Linux interface names hold at most 15 characters (IFNAMSIZ minus the terminating NUL). */
const IFNAMSIZ = 15;

export class LibvirtNetworks {
  /** One ensure per network name at a time: parallel provisioning must not define it twice. */
  private readonly ensuring = new Map<string, Promise<NetworkInfo>>();

  constructor(
    private readonly uri: string,
    /** False on the in-process test driver, whose state a virsh process cannot see or keep. */
    private readonly virshSharesState: boolean,
  ) {}

  async list(): Promise<NetworkInfo[]> {
    const [all, active] = await Promise.all([
      this.names(['net-list', '--all', '--name']),
      this.names(['net-list', '--name']),
    ]);
    const described = await Promise.all(
      all.map((name) =>
        this.dumpXml(name).then(
          (xml) => describe(xml, active.includes(name)),
          (err: unknown) => {
            // Removed by someone else (a drill ending) since the list was taken: no longer there.
            if (err instanceof VmdrError && err.code === 'NETWORK_NOT_FOUND') return undefined;
            throw err;
          },
        ),
      ),
    );
    return described.filter((n): n is NetworkInfo => n !== undefined);
  }

  /** Fails with NetworkNotFound when there is no such network. */
  async get(name: string): Promise<NetworkInfo> {
    const xml = await this.dumpXml(name);
    const active = await this.names(['net-list', '--name']);
    return describe(xml, active.includes(name));
  }

  ensureIsolated(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    const pending = this.ensuring.get(spec.name);
    if (pending) return pending;
    const ensured = this.ensureIsolatedNow(spec).finally(() => this.ensuring.delete(spec.name));
    this.ensuring.set(spec.name, ensured);
    return ensured;
  }

  private async ensureIsolatedNow(spec: IsolatedNetworkSpec): Promise<NetworkInfo> {
    this.requireSharedState('define a network');
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
        await this.run(['net-start', spec.name], 'start network', spec.name);
        // Found down: the host restarted and nothing brought it back (made before vmdr set autostart).
        await this.run(['net-autostart', spec.name], 'autostart network', spec.name);
      }
      return { ...existing, active: true };
    }

    const bridge = spec.bridge ?? bridgeNameFor(spec.name);
    if (bridge.length > IFNAMSIZ) throw new NetworkConflict(spec.name, this.uri, `cannot use bridge ${bridge}: Linux bridge names hold at most ${IFNAMSIZ} characters`);
    const network = await renderTemplate(templatePath('networks', ISOLATED_NETWORK_TEMPLATE), { name: spec.name, bridge });
    setLabels(network, spec.labels ?? {});
    await this.withXmlFile(buildXml(network), (file) => this.run(['net-define', file], 'define network', spec.name));
    try {
      await this.run(['net-start', spec.name], 'start network', spec.name);
      // A host that restarts brings the network back before it starts VMs on it (a fenced source
      // started by failback, a DR VM by its autostart).
      await this.run(['net-autostart', spec.name], 'autostart network', spec.name);
    } catch (err) {
      // Defined but not started (or not to be restarted): take the definition back so a retry starts clean.
      try {
        await this.run(['net-undefine', spec.name], 'undefine network', spec.name);
      } catch (cleanupErr) {
        throw new CleanupFailed(err, `undefine the network ${spec.name}, defined but not started`, cleanupErr);
      }
      throw err;
    }
    return this.get(spec.name);
  }

  /** Destroys and undefines a network vmdr made; refuses any other. */
  async remove(name: string): Promise<void> {
    this.requireSharedState('remove a network');
    const info = await this.get(name);
    if (!info.labels) throw new NotManagedByVmdr('network', name, this.uri, { network: name });
    if (info.active) await this.run(['net-destroy', name], 'stop network', name);
    await this.run(['net-undefine', name], 'undefine network', name);
  }

  private requireSharedState(operation: string): void {
    if (!this.virshSharesState) {
      throw new Unsupported(`${operation} (networks go through virsh, which cannot share the in-process test driver's state)`, this.uri);
    }
  }

  private async names(args: string[]): Promise<string[]> {
    const out = await virsh(this.uri, args, { operation: 'list networks' });
    return out.split('\n').map((l) => l.trim()).filter(Boolean);
  }

  private async dumpXml(name: string): Promise<XmlElement> {
    // The live XML: the test driver refuses --inactive, and for an isolated network the two differ
    // only in what libvirt adds at start (a MAC for the bridge).
    const xml = await virsh(this.uri, ['net-dumpxml', name], { operation: 'read network', network: name });
    const parsed = parseXml(xml);
    if ('error' in parsed) throw new NetworkConflict(name, this.uri, `has XML vmdr cannot read (${parsed.error})`);
    return parsed;
  }

  private async run(args: string[], operation: string, network: string): Promise<void> {
    await virsh(this.uri, args, { operation, network });
  }

  /** virsh net-define reads a file; the file lives only as long as the call. */
  private async withXmlFile<T>(xml: string, fn: (file: string) => Promise<T>): Promise<T> {
    const dir = await mkdtemp(join(tmpdir(), 'vmdr-net-'));
    try {
      const file = join(dir, 'network.xml');
      await writeFile(file, xml, { mode: 0o600 });
      return await fn(file);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
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
