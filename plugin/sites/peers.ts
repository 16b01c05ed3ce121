/**
 * The sites this site is paired with: each peer's certificate, pinned as
 * `<credentials>/peers/<site>.crt`. A peer is known by its certificate's SHA-256 fingerprint and
 * by nothing else: no CA, no name in the certificate. Certificates are public; the directory is
 * still 0700 like the rest of the credentials, so nobody but root changes who is trusted.
 */
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { NAME_PATTERN } from '../config/schema.js';
import { PairingRefused } from './errors.js';
import { fingerprintOf, normalFingerprint, type SiteIdentity } from './identity.js';

/** A PEM certificate is 1-2 KiB; a pinned file or a --cert larger than this is not one. */
export const MAX_CERT_BYTES = 64 * 1024;

export interface PinnedPeer {
  site: string;
  fingerprint: string;
  file: string;
}

export const peersDir = (credentials: string) => join(credentials, 'peers');
const peerFile = (credentials: string, site: string) => join(peersDir(credentials), `${site}.crt`);

/** The certificate pinned for `site`, or undefined when the sites are not paired. */
export async function pinnedCert(credentials: string, site: string): Promise<Buffer | undefined> {
  if (!NAME_PATTERN.test(site)) return undefined;
  return readFile(peerFile(credentials, site)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
}

export async function listPeers(credentials: string): Promise<PinnedPeer[]> {
  const names = await readdir(peersDir(credentials)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const peers: PinnedPeer[] = [];
  for (const name of names.sort()) {
    const site = name.slice(0, -'.crt'.length);
    if (!name.endsWith('.crt') || !NAME_PATTERN.test(site)) continue;
    const file = join(peersDir(credentials), name);
    const pem = await readFile(file);
    // A damaged pin pins nobody; `vmdr site pair` again replaces it.
    if (pem.length > MAX_CERT_BYTES) continue;
    try {
      peers.push({ site, fingerprint: fingerprintOf(pem, file), file });
    } catch {
      continue;
    }
  }
  return peers;
}

/**
 * Pins `pem` as the certificate of `site`. Refused when the fingerprint the operator read on the
 * peer differs, when it is this site's own certificate, or when another site already has it (one
 * certificate is one site: otherwise a peer could act as two).
 */
export async function pairPeer(
  identity: SiteIdentity,
  local: string,
  site: string,
  pem: Buffer,
  options: { file: string; fingerprint?: string },
): Promise<{ site: string; fingerprint: string; replaced: boolean }> {
  const refuse = (code: string, message: string) => new PairingRefused(code, message, { site, file: options.file });
  if (!NAME_PATTERN.test(site)) throw refuse('SITE_NAME_INVALID', `"${site}" is not a site name`);
  if (site === local) throw refuse('PEER_IS_THIS_SITE', `site "${site}" is this site: pair it on the other site`);
  if (pem.length > MAX_CERT_BYTES) throw refuse('CERT_INVALID', `${options.file} is larger than ${MAX_CERT_BYTES / 1024} KiB: not a certificate`);
  const fingerprint = fingerprintOf(pem, options.file);
  if (options.fingerprint !== undefined && normalFingerprint(options.fingerprint) !== fingerprint) {
    throw refuse(
      'FINGERPRINT_MISMATCH',
      `the certificate in ${options.file} has fingerprint ${fingerprint}, not the ${normalFingerprint(options.fingerprint)} given: nothing pinned`,
    );
  }
  if (fingerprint === identity.fingerprint) throw refuse('PEER_CERT_IS_OWN', `${options.file} is the certificate of this site ("${local}"), not of site "${site}"`);
  const peers = await listPeers(identity.dir);
  const holder = peers.find((p) => p.fingerprint === fingerprint && p.site !== site);
  if (holder) throw refuse('PEER_CERT_PINNED', `the certificate in ${options.file} is already pinned for site "${holder.site}"; unpair it first`);
  await mkdir(peersDir(identity.dir), { recursive: true, mode: 0o700 });
  const file = peerFile(identity.dir, site);
  // Only the certificate is kept, whatever else the file held (a key pasted along must not stay here).
  await writeFile(`${file}.new`, new X509Certificate(pem).toString(), { mode: 0o600 });
  await rename(`${file}.new`, file);
  return { site, fingerprint, replaced: peers.some((p) => p.site === site) };
}

/** Unpins `site`; false when it was not paired. */
export async function unpairPeer(credentials: string, site: string): Promise<boolean> {
  if (!NAME_PATTERN.test(site)) return false;
  const file = peerFile(credentials, site);
  const had = await stat(file).then(
    () => true,
    () => false,
  );
  await rm(file, { force: true });
  return had;
}

/**
 * Who a client certificate belongs to, for the endpoint. The pins are read again when the peers
 * directory changes (pair and unpair rename or remove a file in it), so pairing takes effect
 * without restarting `vmdr serve`, and an unpaired site is refused at its next request.
 */
export class PinnedPeers {
  private cached: Map<string, string> = new Map();
  private seen = -1;

  constructor(private readonly credentials: string) {}

  async siteOf(fingerprint: string): Promise<string | undefined> {
    const mtime = await stat(peersDir(this.credentials)).then(
      (s) => s.mtimeMs,
      () => 0,
    );
    if (mtime !== this.seen) {
      this.cached = new Map((await listPeers(this.credentials)).map((p) => [p.fingerprint, p.site]));
      this.seen = mtime;
    }
    return this.cached.get(fingerprint);
  }
}

/** A --cert file as given to `vmdr site pair`: at most MAX_CERT_BYTES read, whatever it is (a FIFO, a disk). */
export async function readCertificateFile(file: string, site: string): Promise<Buffer> {
  const refuse = (detail: string, cause?: unknown) => new PairingRefused('CERT_INVALID', `cannot read the certificate of site "${site}" from ${file}: ${detail}`, { site, file }, cause);
  const handle = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
    throw refuse(err.code ?? String(err), err);
  });
  try {
    const buffer = Buffer.alloc(MAX_CERT_BYTES + 1);
    let size = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, size, buffer.length - size).catch((err: NodeJS.ErrnoException) => {
        throw refuse(err.code ?? String(err), err);
      });
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > MAX_CERT_BYTES) throw refuse(`larger than ${MAX_CERT_BYTES / 1024} KiB: not a certificate`);
    }
    return buffer.subarray(0, size);
  } finally {
    await handle.close();
  }
}
