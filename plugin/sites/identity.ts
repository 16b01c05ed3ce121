/**
 * A site's identity: its TLS key and self-signed certificate, kept in the site's credentials
 * directory. The certificate is both the server certificate of the site's endpoint and the client
 * certificate the site presents to its peers, who pin it (peers.ts). Made with openssl, the one
 * X.509 tool on every host of this kind; Node can use certificates but not issue them.
 */
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { access, chmod, mkdir, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Config, Site } from '../config/schema.js';

const exec = promisify(execFile);

export interface SiteIdentity {
  dir: string;
  cert: Buffer;
  key: Buffer;
  /** SHA256:AA:BB:… of the certificate (what `vmdr site show` prints and `site pair` checks). */
  fingerprint: string;
}

type Endpoint = NonNullable<Site['endpoint']>;

/** Where peers reach a site's endpoint: its `url`, else https:// on the address it listens on. */
export function endpointUrl(endpoint: Endpoint): string {
  return endpoint.url ?? `https://${endpoint.listen}`;
}

/** "host:port" (the config's `listen`, IPv6 in brackets or not) as host and port. */
export function splitHostPort(listen: string): [string, number] {
  const at = listen.lastIndexOf(':');
  return [listen.slice(0, at), Number(listen.slice(at + 1))];
}

/**
 * The site's credentials directory. The default keeps the name it had when only DR sites had one
 * (`receiver-SITE`), so a site upgraded keeps its key, and the certificate its peers pinned.
 */
export function credentialsDir(config: Config, site: Site): string {
  return site.endpoint?.credentials ?? join(dirname(config.state.path), `receiver-${site.name}`);
}

const files = (dir: string) => ({ cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') });

/**
 * The names the certificate carries for the endpoint's address. Peers pin the certificate itself
 * and check no name (peer-client.ts); these only help a human or curl reading it.
 */
function subjectAltNames(hosts: string[]): string {
  const names = ['localhost', '127.0.0.1', ...hosts].filter((h) => h && h !== '0.0.0.0' && h !== '::');
  return [...new Set(names.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)))].join(',');
}

/** Makes what is missing (a 10-year self-signed P-256 certificate, its key 0600 in a 0700 directory) and loads it. */
export async function ensureIdentity(dir: string, site: string, hosts: string[] = []): Promise<SiteIdentity & { made: boolean }> {
  const f = files(dir);
  let made = false;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!(await exists(f.cert)) || !(await exists(f.key))) {
    try {
      await exec('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650',
        '-subj', `/CN=vmdr site ${site}`, '-addext', `subjectAltName=${subjectAltNames(hosts)}`,
        '-keyout', `${f.key}.new`, '-out', `${f.cert}.new`,
      ]);
    } catch (err) {
      throw new VmdrError('CREDENTIALS_UNAVAILABLE', `cannot make the certificate of site "${site}" in ${dir}: ${(err as Error).message.split('\n')[0]}`, {
        subject: { file: dir, site },
        cause: err,
        remedy: 'is openssl installed?',
      });
    }
    await chmod(`${f.key}.new`, 0o600);
    await rename(`${f.key}.new`, f.key);
    await rename(`${f.cert}.new`, f.cert);
    made = true;
  }
  return { ...(await loadIdentity(dir)), made };
}

export async function loadIdentity(dir: string): Promise<SiteIdentity> {
  const f = files(dir);
  const cert = await readCredential(f.cert);
  return { dir, cert, key: await readCredential(f.key), fingerprint: fingerprintOf(cert, f.cert) };
}

/** SHA256:AA:BB:… of a PEM certificate; CERT_INVALID when it is none. */
export function fingerprintOf(pem: Buffer, file: string): string {
  try {
    return `SHA256:${new X509Certificate(pem).fingerprint256}`;
  } catch (err) {
    throw new VmdrError('CERT_INVALID', `${file} is not a PEM certificate`, { subject: { file }, cause: err });
  }
}

/** A fingerprint as people paste it (with or without SHA256:, colons, any case) in the one form compared. */
export function normalFingerprint(text: string): string {
  const hex = text.trim().replace(/^sha256:/i, '').replace(/:/g, '').toUpperCase();
  return `SHA256:${hex.match(/../g)?.join(':') ?? hex}`;
}

async function readCredential(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new VmdrError('CREDENTIALS_UNAVAILABLE', `cannot read site credential ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, {
      subject: { file },
      cause: err,
      remedy: 'run `vmdr site init` (or start `vmdr serve`) on this site once to make them',
    });
  }
}

export async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
