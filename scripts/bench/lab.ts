/**
 * What both benchmarks share: the tools they need (installed when missing), a bench VM on an
 * isolated network of its own with a scratch directory QEMU can use, a config and `vmdr serve` for
 * it, the machine's description, and a cleanup list that runs even after a failure. Nothing here
 * sends traffic off loopback.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { GUEST_READY, labBoot, labScratchDir, waitForSerialLine } from '../../test/helpers/lab.js';
import { startServe, type ServeProcess } from '../../test/helpers/vmdr-serve.js';

export const exec = promisify(execFile);
export const ROOT = join(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'scripts', 'vmdr.js');
export const URI = 'qemu:///system';
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export const say = (s: string) => process.stderr.write(`[bench] ${s}\n`);
export const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
export const mib = (b: number) => `${(b / MiB).toFixed(2)} MiB`;

/** Times one async step with a monotonic clock. */
export async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await work();
  return { ms: performance.now() - t0, value };
}

/** CPU time, in ms, process `pid` has spent (user + system; USER_HZ is 100 on Linux). */
export async function processCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** The system libvirtd (qemu:///system), not the two-site lab's: its pid file is this host's /run. */
export async function systemLibvirtdPid(): Promise<number> {
  return Number((await readFile('/run/libvirtd.pid', 'utf8')).trim());
}

const has = (bin: string) => exec('sh', ['-c', `command -v ${bin}`]).then(() => true, () => false);

/** scripts/lab/setup (build, daemons, lab guest), then the peers' Debian packages when missing. */
export async function prepareMachine(tools: Record<string, string>): Promise<void> {
  say('scripts/lab/setup (packages, build, libvirtd, lab guest)');
  await new Promise<void>((resolve, reject) => {
    const child = spawn(join(ROOT, 'scripts', 'lab', 'setup'), { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`scripts/lab/setup exited with ${code}`))));
  });
  const missing: string[] = [];
  for (const [bin, pkg] of Object.entries(tools)) if (!(await has(bin))) missing.push(pkg);
  if (missing.length) {
    say(`installing ${missing.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    await exec('apt-get', ['update', '-q'], { env, maxBuffer: 64 * MiB });
    await exec('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...new Set(missing)], { env, maxBuffer: 64 * MiB });
  }
}

export async function describeMachine(): Promise<Record<string, string>> {
  const first = async (cmd: string, args: string[]) => (await exec(cmd, args).then((r) => r.stdout, () => '?')).split('\n')[0]!.trim();
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
  return {
    date: new Date().toISOString(),
    cpus: `${cpus().length} × ${/model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? '?'}`,
    memory: `${(totalmem() / GiB).toFixed(1)} GiB`,
    kernel: await first('uname', ['-r']),
    os: (/PRETTY_NAME="(.*)"/.exec(await readFile('/etc/os-release', 'utf8').catch(() => '')) ?? [])[1] ?? '?',
    node: process.version,
    qemu: await first('qemu-system-x86_64', ['--version']),
    libvirt: `libvirtd ${await first('libvirtd', ['--version'])}`,
    accel: 'TCG (domain type qemu; KVM unusable on this machine, see lab-notes)',
    virtnbdbackup: await first('virtnbdbackup', ['-V']).catch(() => '?'),
    rsync: await first('rsync', ['--version']),
    nbdcopy: await first('nbdcopy', ['--version']),
    commit: `${await first('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])}; uncommitted changes in plugin/ hypervisors/ (others' work in the shared tree, built into dist/ by setup): ${
      (await exec('git', ['-C', ROOT, 'status', '--short', '--', 'plugin', 'hypervisors']).then((r) => r.stdout, () => '?')).trim().split('\n').filter(Boolean).join(', ') || 'none'
    }`,
  };
}

/** Undo steps, run newest first, each one's failure reported and the rest still run. */
export class Cleanup {
  private readonly steps: [string, () => Promise<unknown>][] = [];
  add(what: string, step: () => Promise<unknown>): void {
    this.steps.push([what, step]);
  }
  async run(): Promise<void> {
    for (const [what, step] of this.steps.reverse()) {
      await step().catch((err: unknown) => say(`cleanup: ${what}: ${(err as Error).message}`));
    }
    this.steps.length = 0;
  }
}

/**
 * A benchmark's entry point: its body gets a Cleanup that runs however the body ends (success,
 * failure, Ctrl-C or SIGTERM), then the process exits 0, 1 or 130.
 */
export function runBench(name: string, body: (cleanup: Cleanup) => Promise<void>): void {
  const cleanup = new Cleanup();
  const onSignal = () => {
    say('interrupted: cleaning up');
    void cleanup.run().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  body(cleanup)
    .finally(async () => {
      say('cleaning up');
      await cleanup.run();
    })
    .then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`${name} failed: ${(err as Error).stack ?? String(err)}\n`);
        process.exit(1);
      },
    );
}

export interface BenchLab {
  adapter: HypervisorAdapter;
  dir: string;
  network: string;
  tag: string;
}

export async function openLab(cleanup: Cleanup, prefix: string): Promise<BenchLab> {
  const tag = `${prefix}-${randomBytes(3).toString('hex')}`;
  const dir = await labScratchDir(`bench-${prefix}`);
  cleanup.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  const adapter = openAdapter(URI);
  await adapter.connect();
  cleanup.add('close libvirt connection', () => adapter.close());
  const network = `test-net-${tag}`;
  await adapter.ensureIsolatedNetwork({ name: network });
  cleanup.add(`remove network ${network}`, () => adapter.removeNetwork(network));
  return { adapter, dir, network, tag };
}

/** Defines and boots a 1-vCPU TCG lab VM on `disk`; resolves when its guest says it is ready. */
export async function bootVm(lab: BenchLab, cleanup: Cleanup, name: string, disk: string, cmdline?: string): Promise<string> {
  const log = join(lab.dir, `${name}.log`);
  await lab.adapter.defineVm({
    name,
    memoryMiB: 256,
    vcpus: 1,
    boot: labBoot(cmdline),
    disks: [{ path: disk, format: 'qcow2', target: 'vda' }],
    nics: [{ network: lab.network }],
    serialLog: log,
  });
  cleanup.add(`remove VM ${name}`, async () => {
    await exec('virsh', ['-c', URI, 'domjobabort', name]).catch(() => undefined);
    await lab.adapter.stop(name, { mode: 'force' }).catch(() => undefined);
    // Checkpoints are metadata of the domain: undefine needs them gone (or --checkpoints-metadata).
    await exec('virsh', ['-c', URI, 'undefine', name, '--checkpoints-metadata', '--nvram']).catch(() => lab.adapter.undefine(name));
  });
  await lab.adapter.start(name);
  await waitForSerialLine({ vm: name, file: log, pattern: GUEST_READY, timeoutMs: 120_000 });
  return log;
}

/** A config with one DR site on loopback and one protection per VM, and a `vmdr serve` for each site. */
export async function startVmdr(
  lab: BenchLab,
  cleanup: Cleanup,
  vms: { name: string; continuous?: boolean }[],
): Promise<{ config: string; serve: ServeProcess }> {
  const port = await freeLoopbackPort();
  const boot = labBoot();
  const config = join(lab.dir, 'vmdr.yaml');
  await writeFile(
    config,
    `version: 1
state: { path: ${join(lab.dir, 'state.db')} }
sites:
  - { name: prod, uri: "${URI}" }
  - name: dr
    uri: "${URI}"
    storage: ${join(lab.dir, 'replicas')}
    receiver: { listen: "127.0.0.1:${port}", credentials: ${join(lab.dir, 'receiver')} }
protections:
${vms
  .map(
    (v) => `  - name: ${v.name}
    source: { site: prod, vm: ${v.name} }${v.continuous ? '\n    continuous: true' : ''}
    target:
      site: dr
      vm: ${v.name}-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${lab.network} }]`,
  )
  .join('\n')}
`,
  );
  // Two daemons, as on two hosts: the DR site's receiver, and the source site's, to which
  // `vmdr sync` hands its syncs (its control socket), so the sender is not the receiver's process.
  const serve = await startServe(config, { args: ['--site', 'dr', '--no-replicate'] });
  cleanup.add('stop vmdr serve (dr)', () => serve.stop());
  const source = await startServe(config, { args: ['--site', 'prod', '--no-receive', '--no-replicate'] });
  cleanup.add('stop vmdr serve (prod)', () => source.stop());
  return { config, serve };
}

/** Runs the built CLI with --json; resolves with its JSON lines and the wall-clock time. */
export async function vmdrJson(args: string[]): Promise<{ ms: number; lines: Record<string, unknown>[] }> {
  const { ms, value } = await timed(() => exec(process.execPath, [CLI, ...args, '--json'], { maxBuffer: 64 * MiB }));
  return { ms, lines: value.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

export async function virsh(...args: string[]): Promise<string> {
  return (await exec('virsh', ['-c', URI, ...args], { maxBuffer: 16 * MiB })).stdout;
}

/** Every `wrote bytes=N` total the guest's writer loop printed so far, oldest first. */
export async function readWriterLines(log: string): Promise<number[]> {
  const text = await readFile(log, 'utf8');
  return [...text.matchAll(/wrote bytes=(\d+)/g)].map((m) => Number(m[1]));
}

/** Reads a file fully once so every peer starts from the same (warm) page cache. */
export async function warm(file: string): Promise<void> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(8 * MiB);
    while ((await fh.read(buf, 0, buf.length, null)).bytesRead > 0);
  } finally {
    await fh.close();
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

/** The middle value; for an even count, the mean of the two middle ones. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A small markdown table. */
export function table(head: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

/** mulberry32: a seeded PRNG, so offsets and text are the same on every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (() => {
  const r = prng(7);
  const syl = ['ka', 're', 'to', 'mi', 'su', 'lo', 'ne', 'va', 'di', 'po', 'an', 'er', 'ix', 'ul', 'ost', 'ber', 'gra', 'tic'];
  return Array.from({ length: 600 }, () => Array.from({ length: 1 + Math.floor(r() * 4) }, () => syl[Math.floor(r() * syl.length)]).join(''));
})();
const SERVICES = ['nginx', 'postgres', 'sshd', 'cron', 'app-api', 'app-worker', 'kernel', 'systemd', 'redis', 'haproxy'];

/** Log-like text: timestamps, hosts, services, request ids, words. zstd -3 shrinks it about 3-4×. */
export function text(bytes: number, seed: number): Buffer {
  const r = prng(seed);
  const parts: string[] = [];
  let n = 0;
  let t = 1_700_000_000_000 + Math.floor(r() * 1e9);
  while (n < bytes) {
    t += Math.floor(r() * 2000);
    const words = Array.from({ length: 3 + Math.floor(r() * 9) }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
    const line =
      `${new Date(t).toISOString()} host-${Math.floor(r() * 40)} ${SERVICES[Math.floor(r() * SERVICES.length)]}[${1000 + Math.floor(r() * 30000)}]: ` +
      `${words} req=${Math.floor(r() * 0xffffffff).toString(16).padStart(8, '0')} status=${[200, 200, 200, 204, 301, 404, 500][Math.floor(r() * 7)]} ` +
      `bytes=${Math.floor(r() * 100000)} ms=${(r() * 900).toFixed(1)}\n`;
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

async function writeStream(path: string, chunks: () => Iterable<Buffer>): Promise<void> {
  const out = createWriteStream(path);
  for (const c of chunks()) if (!out.write(c)) await new Promise<void>((r) => out.once('drain', () => r()));
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

export const DATA_FILE_SIZE = 16 * MiB;

/**
 * A qcow2 root disk for the lab guest of `size` bytes: ext4 holding /vmdr-marker and one 16 MiB
 * file per entry of `files`, incompressible random or log-like text.
 */
export async function makeDataDisk(dir: string, disk: string, marker: string, size: number, files: ('random' | 'text')[]): Promise<void> {
  const root = join(dir, `root-${randomBytes(3).toString('hex')}`);
  await mkdir(root, { recursive: true });
  await writeFile(join(root, 'vmdr-marker'), `${marker}\n`);
  for (const [i, kind] of files.entries()) {
    await writeStream(join(root, kind === 'random' ? `blob-${i}.bin` : `log-${i}.txt`), function* () {
      for (let done = 0; done < DATA_FILE_SIZE; done += MiB) yield kind === 'random' ? randomBytes(MiB) : text(MiB, i * 1000 + done / MiB);
    });
  }
  const raw = `${root}.raw`;
  await exec('mke2fs', ['-q', '-t', 'ext4', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', root, '-F', raw, String(size / KiB) + 'k']);
  await exec('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, disk]);
  await chmod(disk, 0o644);
  await rm(raw);
  await rm(root, { recursive: true });
}

export const WRITES = 160;
export const WRITE_SIZE = 64 * KiB;

export interface Write {
  offset: number;
  file: string;
}

/**
 * 160 distinct 64 KiB-aligned offsets in [64 MiB, diskSize), away from the file system's first
 * metadata and its backup superblocks, each with its own 64 KiB file: 32 KiB random + 32 KiB text.
 */
/** `seed` picks the offsets and the text: another seed writes what the disk does not hold yet. */
export async function makeWrites(dir: string, diskSize: number, seed = 160): Promise<Write[]> {
  const wdir = join(dir, seed === 160 ? 'writes' : `writes-${seed}`);
  await mkdir(wdir, { recursive: true });
  await chmod(wdir, 0o755);
  const r = prng(seed);
  const avoid = new Set([128, 384, 640, 896].map((m) => (m * MiB) / WRITE_SIZE));
  const chosen = new Set<number>();
  while (chosen.size < WRITES) {
    const g = (64 * MiB) / WRITE_SIZE + Math.floor(r() * ((diskSize - 64 * MiB) / WRITE_SIZE));
    if (!avoid.has(g)) chosen.add(g);
  }
  const writes: Write[] = [];
  let i = 0;
  for (const g of chosen) {
    const file = join(wdir, `w-${String(i).padStart(3, '0')}.bin`);
    await writeFile(file, Buffer.concat([randomBytes(WRITE_SIZE / 2), text(WRITE_SIZE / 2, (seed === 160 ? 50_000 : seed * 1000) + i)]));
    await chmod(file, 0o644);
    writes.push({ offset: g * WRITE_SIZE, file });
    i += 1;
  }
  return writes;
}

/** An HMP qemu-io command on the VM's first virtio disk, through the libvirtd at `uri`. */
export async function qemuIo(vm: string, command: string, uri = URI): Promise<string> {
  const { stdout } = await exec('virsh', ['-c', uri, 'qemu-monitor-command', vm, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "${command}"`], { maxBuffer: 16 * MiB });
  return stdout;
}

/** The writes made through QEMU's block layer (so the dirty bitmap sees them), then a flush. */
export async function applyWrites(vm: string, writes: Write[], uri = URI): Promise<void> {
  for (const w of writes) {
    const out = await qemuIo(vm, `write -q -s ${w.file} ${w.offset} ${WRITE_SIZE}`, uri);
    if (/error|failed|cannot|invalid/i.test(out)) throw new Error(`qemu-io write at ${w.offset}: ${out.trim()}`);
  }
  await qemuIo(vm, 'flush', uri);
}
