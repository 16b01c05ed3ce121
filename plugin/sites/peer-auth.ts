/**
 * Which site an endpoint request comes from, and whether that site may ask for what it asks.
 * The endpoint asks every client for its certificate (mutual TLS) and knows a peer only by the
 * SHA-256 fingerprint of a certificate pinned under `<credentials>/peers/` (peers.ts), or as this
 * site itself when it presents this site's own certificate (one host: the same process or host
 * acting as every site). Every route of a site's endpoint that acts for one protection calls
 * requirePeer with the one site allowed to ask: the protection's source site for replication, its
 * DR site for failover steps on the source.
 */
import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import { VmdrError } from '../../hypervisors/errors.js';
import type { PinnedPeers } from './peers.js';

export interface Peer {
  /** The paired site the request comes from (this site's own name when `self`). */
  site: string;
  /** The client presented this site's own certificate. */
  self: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set for every request that reaches a route: requests from no known peer are refused before routing. */
    peer?: Peer;
  }
}

/** A request whose client certificate is not pinned (or that presents none): 401 (answers.ts), before routing. */
export class PeerUnknown extends VmdrError {
  constructor(message: string) {
    super('PEER_UNKNOWN', message, { remedy: 'pair the sites: `vmdr site show` on each, `vmdr site pair` on the other' });
  }
}

/** A paired site asked about what is not its to ask: answered as for what does not exist (404). */
export class PeerNotAllowed extends VmdrError {
  constructor() {
    super('PROTECTION_UNKNOWN', 'no such protection on this site');
  }
}

/** The peer a request's TLS connection authenticated as; throws PeerUnknown otherwise. */
export async function identifyPeer(request: FastifyRequest, self: { site: string; fingerprint: string }, peers: PinnedPeers): Promise<Peer> {
  const socket = request.raw.socket as TLSSocket;
  const cert = typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : undefined;
  if (!cert?.fingerprint256) throw new PeerUnknown(`site "${self.site}" takes requests only from paired sites, and this client presented no certificate`);
  const fingerprint = `SHA256:${cert.fingerprint256}`;
  if (fingerprint === self.fingerprint) return { site: self.site, self: true };
  const site = await peers.siteOf(fingerprint);
  if (!site) throw new PeerUnknown(`site "${self.site}" is not paired with the site presenting certificate ${fingerprint}`);
  return { site, self: false };
}

/**
 * Allows the request when it comes from `site` or from this site itself; otherwise throws
 * `unknown()` when given (the route's own answer for a protection it does not have, so a peer
 * learns nothing about protections that are not its own), else PeerNotAllowed.
 */
export function requirePeer(request: FastifyRequest, site: string, unknown?: () => unknown): void {
  const peer = request.peer;
  if (peer && (peer.self || peer.site === site)) return;
  throw unknown ? unknown() : new PeerNotAllowed();
}
