/**
 * `vmdr serve` as a child process of a test: the real daemon, started from the built CLI, with
 * the environment a test gives it (a failpoint, say), and stopped or killed like an operator would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { signalThroughNsenter } from '../../scripts/lab/site-process.js';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'scripts', 'vmdr.js');

export interface ServeProcess {
  child: ChildProcess;
  /** Every JSON line it printed so far. */
  events: Record<string, unknown>[];
  stderr: () => string;
  /** Resolves with the exit code or signal when it ends. */
  exited: Promise<number | string | null>;
  stop(): Promise<void>;
  /** SIGKILL, as `kill -9` would; resolves once it ended. */
  kill(): Promise<void>;
}

export interface ServeOptions {
  args?: string[];
  env?: Record<string, string>;
  timeoutMs?: number;
  /**
   * A command that runs the daemon as its only child, e.g. `scripts/lab/sites exec dr --` (nsenter
   * into a lab site): signals go to that child, the daemon, not to the command.
   */
  via?: string[];
}

export async function startServe(config: string, options: ServeOptions = {}): Promise<ServeProcess> {
  const daemon = [CLI, 'serve', '--json', '--config', config, ...(options.args ?? ['--no-replicate'])];
  const [command, ...prefix] = options.via ?? [process.execPath];
  const child = spawn(command!, options.via ? [...prefix, process.execPath, ...daemon] : daemon, {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Record<string, unknown>[] = [];
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const event = JSON.parse(line) as Record<string, unknown>;
        events.push(event);
        if (event.event === 'ready') resolve();
      } catch {
        events.push({ event: 'text', line });
      }
    });
    void exited.then((code) => reject(new Error(`vmdr serve exited (${code}) before it was ready: ${err.trim()}`)));
    setTimeout(() => reject(new Error(`vmdr serve was not ready within ${options.timeoutMs ?? 20_000} ms: ${err.trim()}`)), options.timeoutMs ?? 20_000).unref();
  });
  const signal = async (name: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    if (!options.via) return void child.kill(name);
    await signalThroughNsenter(child, name);
  };
  const stop = async () => {
    await signal('SIGTERM');
    await exited;
  };
  const kill = async () => {
    await signal('SIGKILL');
    await exited;
  };
  try {
    await ready;
  } catch (e) {
    await stop();
    throw e;
  }
  return { child, events, stderr: () => err, exited, stop, kill };
}
