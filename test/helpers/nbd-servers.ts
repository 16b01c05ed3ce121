/**
 * Real NBD servers for the NBD client's tests, one function per server, each on loopback TCP (a free
 * port) or a unix socket in a temp dir, each returning {listen, uri, stop}. `stop` kills the server,
 * waits for it to exit and removes its temp dir; call it from after/afterEach.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { NbdListen } from '../../hypervisors/types.js';
import { freeLoopbackPort as freePort } from '../../plugin/replication/sender/nbd-port.js';
import type { NbdExtent } from '../../plugin/replication/nbd/client.js';

export const exec = promisify(execFile);

export interface NbdServer {
  listen: NbdListen;
  /** The NBD URI of the export, for nbdinfo and nbdcopy. */
  uri: string;
  /** SIGTERM lets the server answer in-flight requests with ESHUTDOWN; SIGKILL is a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export type Transport = 'tcp' | 'unix';

/** The product's own probe for a free loopback port. */
export { freePort };

export function nbdUri(listen: NbdListen, exportName = ''): string {
  return listen.transport === 'tcp'
    ? `nbd://${listen.host}:${listen.port}/${exportName}`
    : `nbd+unix:///${exportName}?socket=${listen.socket}`;
}

export async function scratchDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `test-nbd-${prefix}-`));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * qemu-nbd serving `image`. Persistent (-t), so probes and clients one after another do not end it.
 */
export async function qemuNbd(
  image: string,
  options: { format?: 'qcow2' | 'raw'; transport?: Transport; exportName?: string; readOnly?: boolean } = {},
): Promise<NbdServer> {
  const { dir, remove } = await scratchDir('qemu-nbd');
  const listen = await chooseListen(options.transport ?? 'unix', dir);
  // -e: nbdinfo and nbdcopy look at the export while the client under test is connected.
  const args = ['-t', '-e', '8', '-f', options.format ?? 'qcow2', '--cache=writeback', '--discard=unmap'];
  if (options.exportName !== undefined) args.push('-x', options.exportName);
  if (options.readOnly) args.push('-r');
  args.push(...(listen.transport === 'tcp' ? ['-b', listen.host, '-p', String(listen.port)] : [`--socket=${listen.socket}`]));
  args.push(image);
  return startServer('qemu-nbd', args, listen, options.exportName ?? '', remove);
}

/** nbdkit with `args` (plugin, filters, parameters); -f keeps it a child we can stop. */
export async function nbdkit(args: string[], options: { transport?: Transport; exportName?: string } = {}): Promise<NbdServer> {
  const { dir, remove } = await scratchDir('nbdkit');
  const listen = await chooseListen(options.transport ?? 'tcp', dir);
  const where = listen.transport === 'tcp' ? ['-i', listen.host, '-p', String(listen.port)] : ['--unix', listen.socket];
  return startServer('nbdkit', ['-f', '--exit-with-parent', ...where, ...args], listen, options.exportName ?? '', remove);
}

/**
 * A fault injector: a loopback TCP proxy in front of a real server that forwards both ways and, once
 * `cutAfter` bytes of server-to-client traffic have passed, forwards no more and destroys both
 * sockets, as a server crashing or a network cut mid-reply would.
 */
export async function cuttingProxy(upstream: NbdListen, cutAfter: number): Promise<NbdServer & { cuts: number }> {
  const sockets = new Set<Socket>();
  const state = { cuts: 0 };
  const server: Server = createServer((client) => {
    const origin = connect(upstream.transport === 'tcp' ? { host: upstream.host, port: upstream.port } : { path: upstream.socket });
    sockets.add(client).add(origin);
    let passed = 0;
    const cut = () => {
      client.destroy();
      origin.destroy();
    };
    client.on('data', (chunk: Buffer) => origin.write(chunk));
    origin.on('data', (chunk: Buffer) => {
      const room = cutAfter - passed;
      if (room <= 0) return;
      passed += chunk.length;
      if (chunk.length < room) {
        client.write(chunk);
        return;
      }
      state.cuts++;
      client.write(chunk.subarray(0, room), cut);
    });
    for (const socket of [client, origin]) {
      socket.on('error', () => undefined);
      socket.on('close', () => {
        sockets.delete(socket);
        cut();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const listen: NbdListen = { transport: 'tcp', host: '127.0.0.1', port: (server.address() as { port: number }).port };
  return {
    listen,
    uri: nbdUri(listen),
    get cuts() {
      return state.cuts;
    },
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A fault injector: a loopback TCP proxy that flips the first byte the server sends after the
 * client's first transmission-phase request (the magic of the first reply), as a corrupting
 * middlebox or a broken server would.
 */
export async function corruptingProxy(upstream: NbdListen): Promise<NbdServer> {
  const REQUEST_MAGIC = 0x25609513;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const origin = connect(upstream.transport === 'tcp' ? { host: upstream.host, port: upstream.port } : { path: upstream.socket });
    sockets.add(client).add(origin);
    let armed = false;
    let flipped = false;
    client.on('data', (chunk: Buffer) => {
      if (chunk.length >= 4 && chunk.readUInt32BE(0) === REQUEST_MAGIC) armed = true;
      origin.write(chunk);
    });
    origin.on('data', (chunk: Buffer) => {
      if (armed && !flipped) {
        flipped = true;
        chunk = Buffer.from(chunk);
        chunk[0] = chunk[0]! ^ 0xff;
      }
      client.write(chunk);
    });
    for (const socket of [client, origin]) {
      socket.on('error', () => undefined);
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        origin.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const listen: NbdListen = { transport: 'tcp', host: '127.0.0.1', port: (server.address() as { port: number }).port };
  return {
    listen,
    uri: nbdUri(listen),
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function chooseListen(transport: Transport, dir: string): Promise<NbdListen> {
  return transport === 'tcp' ? { transport, host: '127.0.0.1', port: await freePort() } : { transport, socket: join(dir, 'nbd.sock') };
}

async function startServer(command: string, args: string[], listen: NbdListen, exportName: string, remove: () => Promise<void>): Promise<NbdServer> {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
    await remove();
  };
  try {
    await waitUntilListening(listen, child, 10_000);
  } catch (err) {
    await stop();
    throw new Error(`${command} ${args.join(' ')} did not start: ${(err as Error).message}; stderr: ${stderr}`);
  }
  return { listen, uri: nbdUri(listen, exportName), stop };
}

/** Connects (and hangs up) until the server accepts, with a deadline; fails early if it exited. */
async function waitUntilListening(listen: NbdListen, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited with ${child.exitCode ?? child.signalCode}`);
    const accepted = await new Promise<boolean>((resolve) => {
      const probe = connect(listen.transport === 'tcp' ? { host: listen.host, port: listen.port } : { path: listen.socket });
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (accepted) return;
    if (Date.now() > deadline) throw new Error(`not listening after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** nbdinfo --map of one context, merged the way the client merges: the reference extents. */
export async function nbdinfoMap(uri: string, context = 'base:allocation'): Promise<NbdExtent[]> {
  const { stdout } = await exec('nbdinfo', ['--json', `--map=${context}`, uri]);
  const merged: NbdExtent[] = [];
  for (const { offset, length, type } of JSON.parse(stdout) as { offset: number; length: number; type: number }[]) {
    const last = merged.at(-1);
    if (last && last.flags === type && last.offset + last.length === offset) last.length += length;
    else merged.push({ offset, length, flags: type });
  }
  return merged;
}
