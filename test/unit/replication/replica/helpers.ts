/** Real qemu-io / qemu-img against replica images, and a fresh storage + state file per test. */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import assert from 'node:assert/strict';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { StateStore } from '../../../../plugin/state/store.js';
import { ReplicaStore } from '../../../../plugin/replication/replica/store.js';

const exec = promisify(execFile);
export const KiB = 1024;
export const MiB = 1024 * KiB;

export interface Lab {
  root: string;
  storage: string;
  statePath: string;
  state: StateStore;
  replicas: ReplicaStore;
  cleanup(): Promise<void>;
}

export async function makeLab(): Promise<Lab> {
  return openLab(await mkdtemp(join(tmpdir(), 'test-vmdr-replica-')));
}

/** The lab in `root` (its storage and state file, made when missing). */
function openLab(root: string): Lab {
  const storage = join(root, 'storage');
  const statePath = join(root, 'state', 'vmdr.db');
  const state = StateStore.open(statePath);
  return {
    root,
    storage,
    statePath,
    state,
    replicas: new ReplicaStore(storage, state),
    cleanup: async () => {
      state.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

export async function writePattern(image: string, pattern: number, offset: number, length: number): Promise<void> {
  await exec('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} ${offset} ${length}`, image]);
}

/** True when every byte of the range reads as `pattern`. */
export async function reads(image: string, pattern: number, offset: number, length: number, format = 'qcow2'): Promise<boolean> {
  try {
    const { stdout } = await exec('qemu-io', ['-r', '-f', format, '-c', `read -P ${pattern} ${offset} ${length}`, image]);
    return !/Pattern verification failed/.test(stdout);
  } catch {
    return false;
  }
}

export async function virtualSize(image: string): Promise<number> {
  const { stdout } = await exec('qemu-img', ['info', '--output=json', '-U', image]);
  return (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'];
}

/** The whole content of an image as a raw file, to compare with later. */
export async function snapshotRaw(image: string, to: string): Promise<void> {
  await exec('qemu-img', ['convert', '-U', '-O', 'raw', image, to]);
}

/** Identical size and content (not -s: allocation differs between a chain and a raw copy by nature). */
export async function sameContent(image: string, raw: string): Promise<boolean> {
  const { size } = await stat(raw);
  if ((await virtualSize(image)) !== size) return false;
  try {
    await exec('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'raw', image, raw]);
    return true;
  } catch {
    return false;
  }
}

const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url));

/**
 * Runs test/unit/replication/replica/child.ts in another node process and resolves once it is
 * reaped (no zombie keeps its pid looking alive), with what it printed. `onLine` sees each line
 * of its stdout and may kill -9 it.
 */
export function runChild(
  args: Record<string, unknown>,
  options: { env?: Record<string, string>; onLine?: (line: string, kill: () => void) => void } = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(args)], {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      pending += c;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) options.onLine?.(line, () => child.kill('SIGKILL'));
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** kill -9 the child as soon as it prints `line`. */
export const killOn = (wanted: string) => (line: string, kill: () => void) => {
  if (line === wanted) kill();
};

/**
 * Labs whose points are made once per file and copied for each test that starts from them: a copy
 * has storage and a state file of its own, as fresh as a lab the test made itself, and the raw
 * copies of its points' disks (snapshotAll's, taken once: a copy reads the same bytes).
 */
export function labTemplates(): {
  copy(key: string, build: (lab: Lab) => Promise<void>): Promise<{ lab: Lab; snaps: Map<string, string> }>;
  cleanup(): Promise<void>;
} {
  const built = new Map<string, Promise<{ root: string; snaps: Map<string, string> }>>();
  const make = async (build: (lab: Lab) => Promise<void>) => {
    const lab = await makeLab();
    try {
      await build(lab);
      return { root: lab.root, snaps: await snapshotAll(lab) };
    } finally {
      // Closed: its state file is whole on disk (no write-ahead log left) for the copies.
      lab.state.close();
    }
  };
  return {
    async copy(key, build) {
      if (!built.has(key)) built.set(key, make(build));
      const template = await built.get(key)!;
      const root = await mkdtemp(join(tmpdir(), 'test-vmdr-replica-'));
      await exec('cp', ['-a', join(template.root, 'storage'), join(template.root, 'state'), root]);
      return { lab: openLab(root), snaps: new Map(template.snaps) };
    },
    async cleanup() {
      for (const template of built.values()) {
        const made = await template.catch(() => undefined);
        if (made) await rm(made.root, { recursive: true, force: true });
      }
      built.clear();
    },
  };
}

/** Raw copies of every disk of every listed point of `protection`, to compare with after a merge. */
export async function snapshotAll(lab: Lab, protection = 'web'): Promise<Map<string, string>> {
  const snaps = new Map<string, string>();
  for (const p of lab.replicas.listPoints(protection)) {
    for (const d of p.disks) {
      const raw = join(lab.root, `${p.id}-${d.disk}.raw`);
      await snapshotRaw(d.image, raw);
      snaps.set(`${p.id}/${d.disk}`, raw);
    }
  }
  return snaps;
}

/** Every listed point opens and reads, byte for byte, what it read when `snaps` was taken. */
export async function assertListedPointsIntact(lab: Lab, snaps: Map<string, string>, protection = 'web'): Promise<void> {
  for (const p of lab.replicas.listPoints(protection)) {
    for (const d of p.disks) {
      const raw = snaps.get(`${p.id}/${d.disk}`);
      assert.ok(raw, `${p.id}/${d.disk} was not there before`);
      assert.ok(await sameContent(d.image, raw), `${p.id}/${d.disk} (${basename(d.image)}) changed`);
    }
  }
}
