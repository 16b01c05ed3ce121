import type { Config, Protection } from '../../config/schema.js';
import { peerAddress } from '../../sites/peer-connect.js';
import { ReceiverClient } from './receiver-client.js';

/** The receiver client for a protection's DR site: this site's certificate presented, the DR site's pinned. */
export async function receiverFor(config: Config, file: string, protection: Protection): Promise<ReceiverClient> {
  const a = await peerAddress(config, file, protection.target.site, `the target of protection "${protection.name}"`);
  return new ReceiverClient(a.url, a.site, a.credentials);
}
