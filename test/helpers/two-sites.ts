/**
 * The two-site lab for tests (scripts/lab/sites): a source site and a DR site, each a host of its
 * own on this machine (its own libvirtd, /run, loopback and processes), joined by a veth WAN.
 * A test runs commands and `vmdr serve` inside a site, inspects a site's libvirtd from outside
 * through `uri`, and loses a site with `kill()` as a power cut would.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { ensureIdentity } from '../../plugin/sites/identity.js';
import { pairPeer } from '../../plugin/sites/peers.js';
import { bootLabVm, createLabVm, destroyLabVm, labBoot, type LabVm } from './lab.js';
import { startServe, type ServeOptions, type ServeProcess } from './vmdr-serve.js';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const SITES_SCRIPT = join(ROOT, 'scripts', 'lab', 'sites');
const CLI = join(ROOT, 'dist', 'scripts', 'vmdr.js');
const SITES_DIR = process.env.VMDR_LAB_SITES ?? '/var/lib/vmdr-lab/sites';

export type SiteName = 'source' | 'dr';

export interface RunResult {
  code: number;
  signal?: string;
  stdout: string;
  stderr: string;
}

export interface LabSite {
  name: SiteName;
  /** This site's address on the WAN (the veth between the sites). */
  wanAddress: string;
  /** The command prefix that runs a program inside the site (spawn it with the program appended). */
  via: string[];
  /** This site's libvirtd, reached from outside the site (the test's own process). */
  uri: string;
  /** Runs `cmd` inside the site; resolves with its exit code and output whatever the code. */
  exec(cmd: string, args: string[], options?: { env?: Record<string, string>; timeoutMs?: number }): Promise<RunResult>;
  /** Starts the built CLI inside the site, `--config config` appended, and leaves it running (stdout, stderr piped). */
  startVmdr(args: string[], options: { config: string; env?: Record<string, string> }): ChildProcess;
  /**
   * Runs the built CLI inside the site, `--config config` appended. `clock`: an offset such as
   * "+5m" or "-5m" that this one process's clock runs at (Debian's faketime, libfaketime): the
   * sites share this machine's clock, as two hosts with synchronised clocks would not always.
   */
  vmdr(args: string[], options: { config: string; env?: Record<string, string>; clock?: string }): Promise<RunResult>;
  /** `vmdr serve --json --config config` inside the site; resolves once it printed ready. */
  serve(config: string, options?: Omit<ServeOptions, 'via'>): Promise<ServeProcess>;
  /** The whole site lost at once: SIGKILL to its namespace's PID 1, everything inside dies. */
  kill(): Promise<void>;
  /** Brings the site back (both sites up, the WAN rejoined): its libvirt directories survived. */
  up(): Promise<void>;
}

export interface TwoSites {
  source: LabSite;
  dr: LabSite;
  /** A token-bucket limit on both ends of the WAN ("200mbit"), or "off". */
  wanRate(rate: string): Promise<void>;
}

const WAN: Record<SiteName, string> = { source: '198.18.0.1', dr: '198.18.0.2' };

async function run(file: string, args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  try {
    const { stdout, stderr } = await exec(file, args, {
      env: { ...process.env, ...options.env },
      maxBuffer: 64 * 1024 * 1024,
      ...(options.timeoutMs ? { timeout: options.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; signal?: string; stdout?: string; stderr?: string; message?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, ...(e.signal ? { signal: e.signal } : {}), stdout: e.stdout ?? '', stderr: e.stderr ?? e.message ?? '' };
  }
}

async function sites(...args: string[]): Promise<string> {
  const r = await run(SITES_SCRIPT, args);
  if (r.code !== 0) throw new Error(`scripts/lab/sites ${args.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

let lab: Promise<void> | undefined;

function site(name: SiteName): LabSite {
  const inside = ['exec', name, '--'];
  return {
    name,
    wanAddress: WAN[name],
    via: [SITES_SCRIPT, ...inside],
    uri: `qemu+unix:///system?socket=${join(SITES_DIR, name, 'run-libvirt', 'libvirt-sock')}`,
    exec: (cmd, args, options) => run(SITES_SCRIPT, [...inside, cmd, ...args], options),
    vmdr: (args, options) =>
      run(SITES_SCRIPT, [...inside, ...(options.clock ? ['faketime', '-f', options.clock] : []), process.execPath, CLI, ...args, '--config', options.config], options.env ? { env: options.env } : {}),
    startVmdr: (args, options) =>
      spawn(SITES_SCRIPT, [...inside, process.execPath, CLI, ...args, '--config', options.config], { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] }),
    serve: (config, options = {}) => startServe(config, { ...options, via: [SITES_SCRIPT, ...inside] }),
    kill: async () => {
      lab = undefined;
      await sites('kill', name);
    },
    up: async () => {
      lab = undefined;
      await twoSites();
    },
  };
}

/**
 * Brings the two-site lab up once per test process, and again when a site is down (killed through
 * this helper or by `scripts/lab/sites kill`); idempotent.
 */
export async function twoSites(): Promise<TwoSites> {
  if (lab && (await run(SITES_SCRIPT, ['status'])).code !== 0) lab = undefined;
  lab ??= sites('up').then(
    () => undefined,
    (err: unknown) => {
      lab = undefined;
      throw err;
    },
  );
  await lab;
  return { source: site('source'), dr: site('dr'), wanRate: async (rate) => void (await sites('wan-rate', rate)) };
}

/** This machine's own libvirtd and root namespace as a third host (`thisHost`): site "host". */
export const THIS_HOST = 'host';
type ConfigSite = SiteName | typeof THIS_HOST;
type PerSite = Record<SiteName, string> & { host?: string };

export interface TwoSiteConfigs {
  /** The config `vmdr` reads on each site (localSite differs, nothing else does). */
  source: string;
  dr: string;
  /** With `thisHost`: the config of site "host", this machine's root namespace (run with runVmdr). */
  host?: string;
  /** Each site's state file and storage: separate, as two hosts' would be. */
  state: PerSite;
  storage: PerSite;
  /** Each site's endpoint (receiver) on its WAN address. */
  endpoint: PerSite;
  credentials: PerSite;
}

/**
 * This machine itself as a third host of the lab (`scripts/lab/sites host-links`): its root
 * namespace reaches each site's WAN address over a link of its own (198.18.0.5 to the source
 * site, 198.18.0.9 to the DR site), and neither site reaches its loopback. Made again after a
 * site was killed (its link dies with it).
 */
export async function linkThisHost(): Promise<void> {
  await sites('host-links');
}

/**
 * One config per site under `dir`: the same sites `source` and `dr`, the same protections and
 * plans (YAML, indented as list items; `extra`: more top-level YAML such as tenants or drills),
 * `localSite` set to the site that reads it. Each site's
 * endpoint listens on its WAN address: the DR site's receives replication, the source site's is
 * where the other parts add the source-side routes.
 *
 * Credentials: each site's identity (key and certificate) is made here, in its own directory,
 * and each site pins the other's certificate (`peers/SITE.crt`), as `vmdr site show` on one site
 * and `vmdr site pair` on the other do between real hosts (docs/sites.md).
 */
/**
 * `oneHost`: both sites on this host's own libvirtd and loopback (no namespaces), as two hosts
 * still: the DR site's config names the source's hypervisor by a socket that does not exist, so
 * the DR side can reach the source only through the source site's endpoint.
 */
export async function writeTwoSiteConfigs(dir: string, options: { protections: string; plans?: string; extra?: string; oneHost?: boolean; thisHost?: boolean }): Promise<TwoSiteConfigs> {
  const names: ConfigSite[] = ['source', 'dr', ...(options.thisHost ? [THIS_HOST as ConfigSite] : [])];
  const per = <T>(f: (n: ConfigSite) => T) => Object.fromEntries(names.map((n) => [n, f(n)])) as Record<SiteName, T> & { host?: T };
  const state = per((n) => join(dir, n, 'state.db'));
  const storage = per((n) => join(dir, n, 'storage'));
  const credentials = per((n) => join(dir, 'credentials', n));
  // Each site's network namespace is its own: any port free here is free there.
  const ports: Record<ConfigSite, number> = { source: await freeLoopbackPort(), dr: await freeLoopbackPort(), host: await freeLoopbackPort() };
  // This host's endpoint is on its link to the source site (linkThisHost).
  const address = (n: ConfigSite) => (options.oneHost ? '127.0.0.1' : n === THIS_HOST ? '198.18.0.5' : WAN[n]);
  const endpoint = per((n) => `${address(n)}:${ports[n]}`);
  // 0711: QEMU (libvirt-qemu) walks into the DR storage to boot a failed-over VM, and reads nothing else here.
  for (const n of names) await mkdir(join(dir, n), { recursive: true, mode: 0o711 });
  await mkdir(join(dir, 'credentials'), { recursive: true, mode: 0o700 });
  const identity = per((n) => ensureIdentity(credentials[n]!, n, [address(n)]));
  for (const here of names) {
    for (const peer of names) if (peer !== here) await pairPeer(await identity[here]!, here, peer, (await identity[peer]!).cert, { file: join(credentials[peer]!, 'tls.crt') });
  }
  const uriOf = (n: ConfigSite, local: ConfigSite) => (options.oneHost && n !== local ? 'qemu+unix:///system?socket=/nonexistent/libvirt-sock' : 'qemu:///system');
  const configFor = async (local: ConfigSite) => {
    const file = join(dir, local, 'vmdr.yaml');
    const sitesYaml = names
      .map((n) => `  - name: ${n}\n    uri: "${uriOf(n, local)}"\n    storage: ${storage[n]}\n    endpoint: { listen: "${endpoint[n]}", credentials: ${credentials[n]} }`)
      .join('\n');
    await writeFile(
      file,
      `version: 1
localSite: ${local}
state: { path: ${state[local]} }
sites:
${sitesYaml}
protections:
${options.protections}
${options.plans ? `plans:\n${options.plans}\n` : ''}${options.extra ? `${options.extra}\n` : ''}`,
      { mode: 0o600 },
    );
    return file;
  };
  return { source: await configFor('source'), dr: await configFor('dr'), ...(options.thisHost ? { host: await configFor(THIS_HOST) } : {}), state, storage, endpoint, credentials };
}

/**
 * The start of a two-site test of one protected VM: a booted lab VM `<prefix>…` on the source site,
 * its DR network on the DR site, and both sites' configs protecting it onto `<vm>-dr` (hostname
 * `<prefix>-dr`), with `settings` as extra lines of the protection (`watch: {…}`) and a disk of
 * `diskSize` (default 32M).
 */
export async function protectAcrossSites(
  prefix: string,
  options: { drNetwork: string; settings?: string[]; diskSize?: string },
): Promise<{ lab: TwoSites; vm: LabVm; dr: HypervisorAdapter; configs: TwoSiteConfigs }> {
  const lab = await twoSites();
  const vm = await createLabVm(prefix, { marker: `${prefix}-src`, diskSize: options.diskSize ?? '32M', uri: lab.source.uri });
  const dr = openAdapter(lab.dr.uri);
  try {
    await dr.connect();
    await dr.ensureIsolatedNetwork({ name: options.drNetwork });
    return { lab, vm, dr, configs: await configureAndBoot(prefix, vm, options) };
  } catch (err) {
    // The caller's after() never sees what this made when it fails half way.
    await dr.removeNetwork(options.drNetwork).catch(() => undefined);
    await dr.close().catch(() => undefined);
    await destroyLabVm(vm);
    throw err;
  }
}

async function configureAndBoot(prefix: string, vm: LabVm, options: { drNetwork: string; settings?: string[] }): Promise<TwoSiteConfigs> {
  const boot = labBoot();
  const configs = await writeTwoSiteConfigs(vm.dir, {
    protections: `  - name: ${vm.name}
    source: { site: source, vm: ${vm.name} }
    rpo: 1h
    health: { serial: "^VMDR-GUEST ready", timeout: 90s }
${(options.settings ?? []).map((line) => `    ${line}\n`).join('')}    target:
      site: dr
      vm: ${vm.name}-dr
      hostname: ${prefix}-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${options.drNetwork} }]`,
  });
  await bootLabVm(vm);
  return configs;
}

/**
 * What a two-site test of one protected VM leaves behind, undone in its after(): the source site
 * back up (a test that failed after killing it leaves it down, the VM defined there) with the VM's
 * adapter on it again, the DR target and DR network removed. The VM itself is the caller's to destroy.
 */
export async function undoTwoSiteTest(left: { lab?: TwoSites; vm?: LabVm; dr?: HypervisorAdapter; target: () => string; network: string }): Promise<void> {
  const { lab, vm, dr } = left;
  if (lab && vm) {
    await lab.source.up().catch(() => undefined);
    const source = openAdapter(lab.source.uri);
    await source.connect().then(() => (vm.adapter = source), () => undefined);
  }
  if (dr) {
    await dr.stop(left.target(), { mode: 'force' }).catch(() => undefined);
    await dr.undefine(left.target()).catch(() => undefined);
    await dr.removeNetwork(left.network).catch(() => undefined);
    await dr.close();
  }
}
