/**
 * Which site an endpoint request comes from, and whether that site may ask for what it asks.
 * Every route of a site's endpoint that acts for one protection calls requirePeer with the one
 * site allowed to ask: the protection's source site for replication, its DR site for failover
 * steps on the source. A site talking to itself (one host) is always allowed.
 */
import type { FastifyRequest } from 'fastify';

/**
 * Today the endpoint's one hook admits holders of the site's credential, and every holder is
 * trusted as any site: this is the seam where the paired peer's identity is checked.
 */
export function requirePeer(_request: FastifyRequest, _site: string): void {}
