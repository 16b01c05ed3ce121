/**
 * Kept clients per peer site for the watch: its heartbeats' (its TLS connection stays open between
 * beats (a beat every second would otherwise pay a mutual-TLS handshake and a new certificate
 * check each time) and its held notices'. Bounded: at most 2 beat connections to a site, 1 kept idle, and an idle one is
 * closed after 30 s (before the endpoint's own 65 s), so a beat never writes into a connection the
 * endpoint is closing. The credentials are read when a site is first called; a peer that no
 * longer passes the pin check is forgotten, so the next beat reads them again (a site re-paired).
 */
import type { Config } from '../config/schema.js';
import type { PeerClient } from './peer-client.js';
import { connectPeer } from './peer-connect.js';

/** Beats: one at a time per site (a second for a beat overlapping a slow one). */
const BEATS = { maxSockets: 2, maxFreeSockets: 1, keepAliveMsecs: 1_000, timeout: 30_000 } as const;
/** Notices: held answers (one per group of the site's protections), never queued behind each other, nor behind the beats. */
const NOTICES = { maxSockets: 16, maxFreeSockets: 1, keepAliveMsecs: 1_000, timeout: 30_000 } as const;

export type KeptPurpose = 'beats' | 'notices';

export class KeptPeers {
  readonly #clients = new Map<string, Promise<PeerClient>>();

  constructor(
    private readonly config: Config,
    private readonly file: string,
    /** How long a request may see no byte from the peer (a heartbeat is bounded by its caller too). */
    private readonly idleTimeoutMs = 60_000,
  ) {}

  /** The site's client for beats, or for the held notices' answers (apart: a held answer never delays a beat). */
  client(site: string, purpose: KeptPurpose = 'beats'): Promise<PeerClient> {
    const key = `${purpose}\n${site}`;
    let client = this.#clients.get(key);
    if (!client) {
      client = connectPeer(this.config, this.file, site, { idleTimeoutMs: this.idleTimeoutMs, agent: purpose === 'beats' ? BEATS : NOTICES });
      this.#clients.set(key, client);
      // Credentials that could not be read are read again by the next caller.
      const opened = client;
      opened.catch(() => this.#clients.get(key) === opened && this.#clients.delete(key));
    }
    return client;
  }

  /** The site's clients are closed; the next call opens another with the credentials read afresh. */
  forget(site: string): void {
    for (const purpose of ['beats', 'notices'] as const) this.#drop(`${purpose}\n${site}`);
  }

  close(): void {
    for (const key of [...this.#clients.keys()]) this.#drop(key);
  }

  #drop(key: string): void {
    const client = this.#clients.get(key);
    this.#clients.delete(key);
    void client?.then((c) => c.close(), () => undefined);
  }
}
