import { VmdrError } from '../../hypervisors/errors.js';

/**
 * A webhook was not told of an event: its endpoint refused it, did not answer in time (after the
 * retries), or its secret file could not be read. `webhook` names it by origin only: a URL's path
 * often carries the receiver's own secret (chat webhooks do), and warnings are logged.
 */
export class WebhookFailed extends VmdrError {
  constructor(webhook: string, event: string, detail: string, options: { attempts: number; status?: number; cause?: unknown }) {
    super('WEBHOOK_FAILED', `webhook ${webhook}: event ${event} not delivered after ${options.attempts} attempt${options.attempts === 1 ? '' : 's'}: ${detail}`, {
      subject: { webhook, notification: event, attempts: options.attempts, status: options.status },
      cause: options.cause,
    });
  }
}
