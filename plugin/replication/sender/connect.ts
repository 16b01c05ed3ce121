import type { Config, Protection } from '../../config/schema.js';
import { VmdrError } from '../../../hypervisors/errors.js';
import { credentialsDir, loadSenderCredentials, receiverUrl } from '../receiver/credentials.js';
import { ReceiverClient } from './receiver-client.js';

/** The receiver client for a protection's DR site, with that site's pinned certificate and token. */
export async function receiverFor(config: Config, file: string, protection: Protection): Promise<ReceiverClient> {
  const site = config.sites.find((s) => s.name === protection.target.site)!;
  if (!site.receiver) {
    throw new VmdrError('RECEIVER_NOT_CONFIGURED', `${file}: site "${site.name}" is the target of protection "${protection.name}" but has no receiver`, {
      subject: { file, site: site.name, protection: protection.name },
      remedy: `add receiver: { listen: HOST:PORT } to site "${site.name}"`,
    });
  }
  return new ReceiverClient(receiverUrl(site.receiver), site.name, await loadSenderCredentials(credentialsDir(config, site)));
}
