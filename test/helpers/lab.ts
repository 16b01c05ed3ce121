/**
 * The real lab for tests: the lab guest (built by scripts/lab/build-guest when missing), disks with
 * markers, and the serial-console wait the product itself uses.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, chmod, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { GUEST_READY, waitForSerialLine } from '../../plugin/failover/serial-health.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { LAB_CMDLINE, LAB_DIR, labBoot, makeDisk } from '../../scripts/lab/production.js';

export { makeDisk, labBoot, LAB_CMDLINE } from '../../scripts/lab/production.js';
export { waitForSerialLine, parseGuestFields, GUEST_READY, fileSize } from '../../plugin/failover/serial-health.js';

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');

export function labPaths() {
  return { dir: LAB_DIR, kernel: join(LAB_DIR, 'vmlinuz'), initrd: join(LAB_DIR, 'initrd.img'), baseDisk: join(LAB_DIR, 'base-disk.qcow2') };
}

export async function ensureLabGuest(): Promise<void> {
  const paths = labPaths();
  const present = await Promise.all([paths.kernel, paths.initrd, paths.baseDisk].map((p) => access(p).then(() => true, () => false)));
  if (present.every(Boolean)) return;
  await exec(join(ROOT, 'scripts', 'lab', 'build-guest'));
}

/** A scratch directory QEMU (user libvirt-qemu) can write its console logs and disks into. */
export async function labScratchDir(prefix: string): Promise<string> {
  const base = join(LAB_DIR, 'tests');
  await mkdir(base, { recursive: true, mode: 0o755 });
  const dir = await mkdtemp(join(base, `${prefix}-`));
  await chmod(dir, 0o755);
  return dir;
}

/** Runs the built CLI; resolves with its exit code and output whatever the code. */
export async function runVmdr(args: string[], env: Record<string, string> = {}): Promise<{ code: number; signal?: string; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [join(ROOT, 'dist', 'scripts', 'vmdr.js'), ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; signal?: string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, ...(e.signal ? { signal: e.signal } : {}), stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Runs the built CLI with `--json`, which must exit 0: its result line (else its last line). */
export async function vmdrJson<T>(args: string[]): Promise<T> {
  const r = await runVmdr([...args, '--json']);
  if (r.code !== 0) throw new Error(`vmdr ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event?: string });
  return (lines.find((l) => l.event === 'result') ?? lines[lines.length - 1]) as T;
}

/** Starts the built CLI and lets the test kill it mid-way: its process, and its result when it ends. */
export function spawnVmdr(args: string[], env: Record<string, string> = {}): { process: ChildProcess; done: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'scripts', 'vmdr.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const done = new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { process: child, done };
}

/** A throwaway lab VM on an isolated network of its own, for one suite. */
export interface LabVm {
  adapter: HypervisorAdapter;
  name: string;
  network: string;
  dir: string;
  disk: string;
  log: string;
}

/**
 * `uri`: the libvirtd to define it on (a two-site lab site's, say); this host's by default.
 * `agent`: give it the guest agent channel, and the guest its agent (vmdr.agent=on: qemu-ga runs on it).
 */
export async function createLabVm(prefix: string, options: { marker: string; diskSize?: string; cmdline?: string; uri?: string; agent?: boolean }): Promise<LabVm> {
  await ensureLabGuest();
  const name = `test-${prefix}-${randomBytes(3).toString('hex')}`;
  const dir = await labScratchDir(prefix);
  const adapter = openAdapter(options.uri ?? 'qemu:///system');
  await adapter.connect();
  const vm: LabVm = { adapter, name, network: `test-net-${name.slice(-6)}`, dir, disk: join(dir, 'vda.qcow2'), log: join(dir, 'console.log') };
  await adapter.ensureIsolatedNetwork({ name: vm.network });
  await makeDisk(vm.disk, options.marker, options.diskSize);
  await adapter.defineVm({
    name,
    memoryMiB: 256,
    vcpus: 1,
    boot: labBoot(options.agent ? `${options.cmdline ?? LAB_CMDLINE} vmdr.agent=on` : options.cmdline),
    disks: [{ path: vm.disk, format: 'qcow2', target: 'vda' }],
    nics: [{ network: vm.network }],
    serialLog: vm.log,
    ...(options.agent ? { guestAgent: true } : {}),
  });
  return vm;
}

/** Stops and undefines these VMs of the adapter's host, whatever state they are in, and whether they exist or not. */
export async function removeLabVms(adapter: HypervisorAdapter, names: string[]): Promise<void> {
  for (const name of names) {
    await adapter.stop(name, { mode: 'force' }).catch(() => undefined);
    await adapter.undefine(name).catch(() => undefined);
  }
}

/**
 * Removes everything createLabVm made, whatever state the test left it in, and the VM's DR
 * target on the same libvirtd (`<name>-dr`, the lab's convention: labProtection) when a test made
 * one; then `networks` (a DR network, once nothing is on it) and the VM's own network.
 */
export async function destroyLabVm(vm: LabVm | undefined, networks: string[] = []): Promise<void> {
  if (!vm) return;
  await removeLabVms(vm.adapter, [`${vm.name}-dr`, vm.name]);
  for (const network of [...networks, vm.network]) await vm.adapter.removeNetwork(network).catch(() => undefined);
  await vm.adapter.close();
  await rm(vm.dir, { recursive: true, force: true });
}

/** Starts a lab VM and waits until its guest prints the ready line. */
export async function bootLabVm(vm: LabVm): Promise<void> {
  await vm.adapter.start(vm.name);
  await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000 });
}

/**
 * Writes vm.dir/vmdr.yaml for a one-host lab: sites prod and dr on the same libvirtd, the DR
 * site's storage and receiver (on a free loopback port) under vm.dir, then the protections given
 * as YAML. `credentials: false` leaves the receiver's credentials at their default place.
 */
export async function writeOneHostConfig(
  vm: LabVm,
  protections: string,
  options: { statePath?: string; credentials?: boolean } = {},
): Promise<string> {
  const config = join(vm.dir, 'vmdr.yaml');
  const credentials = options.credentials === false ? '' : `, credentials: ${join(vm.dir, 'receiver')}`;
  await writeFile(
    config,
    `version: 1
state: { path: ${options.statePath ?? join(vm.dir, 'state.db')} }
sites:
  - { name: prod, uri: "qemu:///system" }
  - name: dr
    uri: "qemu:///system"
    storage: ${join(vm.dir, 'replicas')}
    receiver: { listen: "127.0.0.1:${await freeLoopbackPort()}"${credentials} }
protections:
${protections}`,
  );
  return config;
}
