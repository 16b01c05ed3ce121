/**
 * Whom a vSphere session trusts, decided before the first byte of a request (the login carries the
 * password) goes out: an https.Agent that hands a connection to a request only once the server's
 * certificate passed. With a pinned thumbprint the certificate's SHA-256 fingerprint must be exactly
 * that one (vCenter and ESXi ship self-signed certificates); without one the certificate must
 * verify against the system's CAs plus caFile, host name included.
 *
 * Node's `rejectUnauthorized: false` alone would let a request write to any server, and
 * `checkServerIdentity` is not even called for a certificate that failed verification; so the TLS
 * layer accepts every certificate and this agent decides, on 'secureConnect', whether the socket
 * is given to the request at all.
 */
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { VsphereEndpoint } from './endpoint.js';
import { VsphereCaFileInvalid, VsphereCertificateRefused } from './errors.js';

export async function trustingAgent(endpoint: Pick<VsphereEndpoint, 'host' | 'thumbprint' | 'caFile'>): Promise<https.Agent> {
  let ca: string[] | undefined;
  if (endpoint.caFile) {
    let pem: string;
    try {
      pem = await readFile(endpoint.caFile, 'utf8');
    } catch (cause) {
      throw new VsphereCaFileInvalid(endpoint.caFile, `cannot be read (${(cause as NodeJS.ErrnoException).code})`, cause);
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new VsphereCaFileInvalid(endpoint.caFile, 'holds no PEM certificate');
    ca = [...tls.rootCertificates, pem];
  }
  return new TrustingAgent(endpoint.host, endpoint.thumbprint, ca);
}

class TrustingAgent extends https.Agent {
  constructor(
    private readonly host: string,
    private readonly thumbprint: string | undefined,
    ca: string[] | undefined,
  ) {
    // No TLS session resumption: every connection shows its certificate again.
    super({ keepAlive: true, maxCachedSessions: 0, rejectUnauthorized: false, ...(ca ? { ca } : {}) });
  }

  override createConnection(options: https.RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const socket = super.createConnection(options) as tls.TLSSocket;
    const failed = (err: Error) => callback?.(err, socket);
    socket.once('error', failed);
    socket.once('secureConnect', () => {
      socket.off('error', failed);
      const refusal = this.refusalOf(socket);
      if (refusal) {
        socket.destroy();
        return callback?.(refusal, socket);
      }
      callback?.(null, socket);
    });
    // Returning nothing makes the agent wait for the callback: no request sees the socket before that.
    return undefined;
  }

  private refusalOf(socket: tls.TLSSocket): VsphereCertificateRefused | undefined {
    const fingerprint = socket.getPeerCertificate()?.fingerprint256;
    const presented = fingerprint ? `SHA256:${fingerprint.toUpperCase()}` : 'SHA256:(none)';
    if (this.thumbprint) return presented === this.thumbprint ? undefined : new VsphereCertificateRefused(this.host, presented, this.thumbprint);
    if (socket.authorized) return undefined;
    return new VsphereCertificateRefused(this.host, presented, undefined, String(socket.authorizationError ?? 'not verified'));
  }
}
