/**
 * One kept client per peer site for the watch's heartbeats: its TLS connection stays open between
 * beats (a beat every second would otherwise pay a mutual-TLS handshake and a new certificate
 * check each time). Bounded: at most 2 connections to a site, 1 kept idle, and an idle one is
 * closed after 30 s (before the endpoint's own 65 s), so a beat never writes into a connection the
 * endpoint is closing. The credentials are read when a site is first called; a peer that no
 * longer passes the pin check is forgotten, so the next beat reads them again (a site re-paired).
 */
import type { Config } from '../config/schema.js';
import type { PeerClient } from './peer-client.js';
import { connectPeer } from './peer-connect.js';

const KEPT = { maxSockets: 2, maxFreeSockets: 1, keepAliveMsecs: 1_000, timeout: 30_000 } as const;

export class KeptPeers {
  readonly #clients = new Map<string, Promise<PeerClient>>();

  constructor(
    private readonly config: Config,
    private readonly file: string,
    /** How long a request may see no byte from the peer (a heartbeat is bounded by its caller too). */
    private readonly idleTimeoutMs = 60_000,
  ) {}

  client(site: string): Promise<PeerClient> {
    let client = this.#clients.get(site);
    if (!client) {
      client = connectPeer(this.config, this.file, site, { idleTimeoutMs: this.idleTimeoutMs, agent: KEPT });
      this.#clients.set(site, client);
      // Credentials that could not be read are read again by the next caller.
      const opened = client;
      opened.catch(() => this.#clients.get(site) === opened && this.#clients.delete(site));
    }
    return client;
  }

  /** The site's client is closed; the next call opens another with the credentials read afresh. */
  forget(site: string): void {
    const client = this.#clients.get(site);
    this.#clients.delete(site);
    void client?.then((c) => c.close(), () => undefined);
  }

  close(): void {
    for (const site of [...this.#clients.keys()]) this.forget(site);
  }
}
