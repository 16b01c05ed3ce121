/**
 * The daemon's one sender of notifications: events about one subject (a protection) are told in
 * the order they happened, each after the one before it was delivered or given up on, so a
 * webhook never hears of a recovery before the breach it ends. Nobody waits for it: `tell` returns
 * at once; the daemon's shutdown waits for `idle` (retries end when its signal aborts).
 */
import type { Notifications } from '../config/schema.js';
import { SequencerByKey } from '../replication/receiver/sequencer.js';
import { notify, type NotificationEvent, type NotifyOptions } from './webhook.js';

export class Notifier {
  readonly #order = new SequencerByKey();

  constructor(
    private config: Notifications,
    private readonly options: NotifyOptions = {},
  ) {}

  tell(subject: string, event: NotificationEvent): void {
    const config = this.config;
    if (config.webhooks.length === 0) return;
    void this.#order.run(subject, () => notify(config, event, this.options));
  }

  /** The webhooks told from now on (a reloaded config); events already on their way keep theirs. */
  reconfigure(config: Notifications): void {
    this.config = config;
  }

  idle(): Promise<void> {
    return this.#order.idle();
  }
}
