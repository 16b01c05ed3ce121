/**
 * A WAN of the tests' own between two sites: a TCP proxy that holds every chunk for a delay each
 * way, and on demand stalls (stops reading, as a link losing packets does while TCP retransmits)
 * or drops every connection. This kernel has no netem. It counts the bytes it takes from the
 * client side: the rate a sender puts on the link, measured on the link.
 *
 * It runs inside a site (its WAN address is there, not in the tests' namespace): `startWanProxy`
 * starts this file in the site; it prints `{"listening":PORT}`, then `{"t":MS,"up":BYTES}` every
 * 50 ms while bytes flow, and takes "stall MS" and "drop" lines on its stdin.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface WanProxy {
  port: number;
  /** (time ms, bytes from the client side so far), every 50 ms while they change. */
  readonly samples: { t: number; up: number }[];
  stall(ms: number): void;
  drop(): void;
  stop(): Promise<void>;
}

/** Starts the proxy inside a site (`via`: the command prefix that runs a program there; none: here), listening on `host`:0. */
export async function startWanProxy(via: string[], options: { host: string; target: string; delayMs: number }): Promise<WanProxy> {
  const [command, ...prefix] = via.length > 0 ? via : [process.execPath];
  const child: ChildProcess = spawn(command!, [...prefix, ...(via.length > 0 ? [process.execPath] : []), '--import', import.meta.resolve('tsx'), join(import.meta.dirname, 'wan-proxy.ts'), options.host, options.target, String(options.delayMs)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const samples: { t: number; up: number }[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the WAN proxy ended (${code}) before it listened`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as { listening?: number; t?: number; up?: number };
      if (m.listening) resolve(m.listening);
      else samples.push({ t: m.t!, up: m.up! });
    });
  });
  const say = (line: string) => child.stdin!.write(`${line}\n`);
  return {
    port,
    samples,
    stall: (ms) => say(`stall ${ms}`),
    drop: () => say('drop'),
    // Its stdin closed, it ends (a signal to nsenter would not reach it).
    stop: async () => {
      child.stdin!.end();
      await exited;
    },
  };
}

/** One direction of a connection: each chunk written `delayMs` after it came, reading paused while the far side is full. */
function pipeDelayed(from: Socket, to: Socket, delayMs: number, count: (n: number) => void, stalled: () => number): void {
  let queued = 0;
  from.on('data', (chunk: Buffer) => {
    count(chunk.length);
    queued += 1;
    // A stall holds what was read until it ends; reading stops meanwhile (pause below).
    const wait = Math.max(delayMs, stalled() - Date.now());
    setTimeout(() => {
      queued -= 1;
      if (!to.destroyed && !to.write(chunk)) from.pause();
    }, wait);
    if (stalled() > Date.now()) from.pause();
  });
  to.on('drain', () => {
    if (stalled() <= Date.now()) from.resume();
  });
  from.on('end', () => {
    const finish = () => (queued === 0 ? to.end() : setTimeout(finish, delayMs));
    finish();
  });
}

function main(host: string, target: string, delayMs: number): void {
  const [targetHost, targetPort] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set<Socket>();
  let up = 0;
  let reported = -1;
  let stallUntil = 0;
  const server = createServer((client) => {
    const far = connect(targetPort, targetHost);
    for (const s of [client, far]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => [client, far].forEach((x) => x.destroy()));
    }
    client.on('close', () => far.destroy());
    far.on('close', () => client.destroy());
    pipeDelayed(client, far, delayMs, (n) => (up += n), () => stallUntil);
    pipeDelayed(far, client, delayMs, () => undefined, () => 0);
  });
  server.listen(0, host, () => process.stdout.write(`${JSON.stringify({ listening: (server.address() as { port: number }).port })}\n`));
  setInterval(() => {
    if (up === reported) return;
    reported = up;
    process.stdout.write(`${JSON.stringify({ t: Date.now(), up })}\n`);
  }, 50);
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [what, arg] = line.trim().split(/\s+/);
    if (what === 'stall') {
      stallUntil = Date.now() + Number(arg);
      for (const s of sockets) s.pause();
      setTimeout(() => sockets.forEach((s) => s.resume()), Number(arg));
    }
    if (what === 'drop') for (const s of sockets) s.destroy();
  }).on('close', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
}

if (process.argv[1] && import.meta.filename === process.argv[1]) main(process.argv[2]!, process.argv[3]!, Number(process.argv[4]));
