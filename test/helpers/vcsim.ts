/**
 * govmomi's vSphere simulator (scripts/lab/vcsim/main.go, built by scripts/lab/build-vcsim) as a
 * child process of a test: each call a fresh simulator (VPX model: datacenter DC0, cluster DC0_C0,
 * hosts, datastore LocalDS_0, VMs DC0_H0_VM0 …, network "VM Network", port group DC0_DVPG0) on
 * loopback with TLS, accepting one user whose password travels in its environment, never in argv.
 *
 * Start it in `before` and stop it in `after`, so a failing test still ends it:
 *
 *     let vcsim: Vcsim;
 *     before(async () => (vcsim = await startVcsim()));
 *     after(async () => vcsim?.stop());
 *
 * A test runner that dies without `after` leaves nothing behind either: the simulator exits when
 * its stdin (a pipe from this process) closes.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, constants } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { connect } from 'node:tls';

export const VCSIM_BINARY = process.env.VMDR_VCSIM_BINARY ?? '/var/lib/vmdr-lab/bin/vmdr-vcsim';

export interface Vcsim {
  /** https://127.0.0.1:PORT/sdk */
  url: string;
  host: string;
  port: number;
  /** SHA-256 fingerprint of its certificate: `SHA256:AA:BB:…`. */
  thumbprint: string;
  user: string;
  password: string;
  /** `vsphere://user@127.0.0.1:PORT/DC0?thumbprint=…`: the URI vmdr is given for it. */
  uri(datacenter?: string): string;
  /** Its certificate as PEM, read without trusting it: for a test or a peer tool to trust it on purpose. */
  certificatePem(): Promise<string>;
  /** What it wrote on stderr so far (its own log; never the password). */
  stderr(): string;
  /** SIGTERM, then waits until it ended. Safe to call twice. */
  stop(): Promise<void>;
}

export interface VcsimOptions {
  user?: string;
  /** Default: a random one, different for every simulator. */
  password?: string;
  /** How long after power on a VM reports VMware Tools running (default 500 ms). */
  toolsDelayMs?: number;
  /** How long to wait for it to listen (default 20 s). */
  timeoutMs?: number;
}

export async function startVcsim(options: VcsimOptions = {}): Promise<Vcsim> {
  await access(VCSIM_BINARY, constants.X_OK).catch(() => {
    throw new Error(`${VCSIM_BINARY} is missing: run scripts/lab/build-vcsim (scripts/lab/setup does)`);
  });
  const user = options.user ?? 'vmdr-test';
  const password = options.password ?? `pw-${randomBytes(12).toString('base64url')}`;
  const timeoutMs = options.timeoutMs ?? 20_000;
  const args = ['-listen', '127.0.0.1:0', '-user', user, '-exit-on-stdin-eof'];
  if (options.toolsDelayMs !== undefined) args.push('-tools-delay', `${options.toolsDelayMs}ms`);
  const child = spawn(VCSIM_BINARY, args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TMPDIR: process.env.TMPDIR ?? '/tmp', VCSIM_PASSWORD: password },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };

  let timer: NodeJS.Timeout | undefined;
  const listening = new Promise<{ url: string; thumbprint: string }>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      try {
        resolve(JSON.parse(line) as { url: string; thumbprint: string });
      } catch {
        reject(new Error(`vmdr-vcsim printed ${JSON.stringify(line)} instead of its address`));
      }
    });
    void exited.then(() => reject(new Error(`vmdr-vcsim exited (${child.exitCode ?? child.signalCode}) before it listened: ${err.trim()}`)));
    timer = setTimeout(() => reject(new Error(`vmdr-vcsim did not listen within ${timeoutMs} ms: ${err.trim()}`)), timeoutMs);
  });
  let address: { url: string; thumbprint: string };
  try {
    address = await listening;
  } catch (e) {
    await stop();
    throw e;
  } finally {
    clearTimeout(timer);
  }
  const url = new URL(address.url);
  const port = Number(url.port);
  return {
    url: address.url,
    host: url.hostname,
    port,
    thumbprint: address.thumbprint,
    user,
    password,
    uri: (datacenter = 'DC0') =>
      `vsphere://${encodeURIComponent(user)}@${url.hostname}:${port}/${encodeURIComponent(datacenter)}?thumbprint=${address.thumbprint}`,
    certificatePem: () => certificatePem(url.hostname, port),
    stderr: () => err,
    stop,
  };
}

/** The PEM of the certificate a TLS server presents. */
async function certificatePem(host: string, port: number): Promise<string> {
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const socket = connect({ host, port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerCertificate().raw);
      socket.end();
    });
    socket.once('error', reject);
  });
  return `-----BEGIN CERTIFICATE-----\n${raw.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
}
