/**
 * Tells the config's webhooks of an event: one JSON POST per webhook that wants it, each attempt
 * bounded by the webhook's timeout, retried a few times when the endpoint is down or answers 5xx,
 * 408 or 429 (never on another 4xx: that answer would not change). Every attempt of one event
 * carries the same X-Vmdr-Delivery id, so a receiver that saw it already can drop the repeat.
 *
 * With a secret file, X-Vmdr-Signature is `sha256=` and the hex HMAC-SHA256 of the exact body under
 * that key; the body's `at` lets a receiver refuse an old one replayed. The file is read at each
 * event: a rotated key is used from the next one on.
 *
 * `notify` never throws and callers do not wait for it: a webhook down for minutes must not hold
 * back a replication loop or the RPO monitor. What was not delivered goes to `onWarning`.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NotificationEventName, Notifications, Webhook } from '../config/schema.js';
import { WebhookFailed } from './errors.js';

/** What every event has; each kind adds its own fields (an RPO event: protection, tenant, lag, rpo). */
export interface NotificationEvent {
  event: NotificationEventName;
  /** ISO 8601: when it happened. */
  at: string;
}

export interface NotifyOptions {
  onWarning?: (error: WebhookFailed) => void;
  /** Ends retries early (the daemon stops). */
  signal?: AbortSignal;
  /** Attempts per webhook, the first included. */
  attempts?: number;
  /** The pause before the second attempt; it doubles after each. */
  retryDelayMs?: number;
}

export interface Delivery {
  /** The webhook by origin (scheme, host, port): never its path, which may hold a secret. */
  webhook: string;
  delivered: boolean;
  attempts: number;
  /** The endpoint's last HTTP status, when it answered. */
  status?: number;
}

const ATTEMPTS = 3;
const RETRY_DELAY_MS = 1_000;
/** What an endpoint may answer and be asked again: it is down, overloaded or slow. */
const retryable = (status: number) => status >= 500 || status === 408 || status === 429;

export async function notify(config: Notifications, event: NotificationEvent, options: NotifyOptions = {}): Promise<Delivery[]> {
  const webhooks = config.webhooks.filter((w) => !w.events || w.events.includes(event.event));
  const body = JSON.stringify(event);
  const delivery = randomUUID();
  return Promise.all(
    webhooks.map(async (webhook) => {
      const outcome = await send(webhook, event.event, body, delivery, options);
      if (!outcome.delivered && outcome.error) options.onWarning?.(outcome.error);
      const { error: _, ...result } = outcome;
      return result;
    }),
  );
}

async function send(webhook: Webhook, event: string, body: string, delivery: string, options: NotifyOptions): Promise<Delivery & { error?: WebhookFailed }> {
  const name = new URL(webhook.url).origin;
  const failed = (attempts: number, detail: string, extra: { status?: number; cause?: unknown } = {}) => ({
    webhook: name,
    delivered: false,
    attempts,
    ...(extra.status !== undefined ? { status: extra.status } : {}),
    error: new WebhookFailed(name, event, detail, { attempts, ...extra }),
  });
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'vmdr',
    'x-vmdr-event': event,
    'x-vmdr-delivery': delivery,
  };
  if (webhook.secretFile) {
    let secret: string;
    try {
      // A trailing newline is the editor's, not the key's.
      secret = (await readFile(webhook.secretFile, 'utf8')).replace(/\r?\n$/, '');
    } catch (cause) {
      return failed(0, `cannot read its secret file ${webhook.secretFile}: ${(cause as Error).message}`, { cause });
    }
    if (!secret) return failed(0, `its secret file ${webhook.secretFile} is empty`);
    headers['x-vmdr-signature'] = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
  }

  const attempts = options.attempts ?? ATTEMPTS;
  let delay = options.retryDelayMs ?? RETRY_DELAY_MS;
  let last: ReturnType<typeof failed> | undefined;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) {
      const stopped = await sleep(delay, false, options.signal ? { signal: options.signal } : {}).catch(() => true);
      if (stopped) break;
      delay *= 2;
    }
    const signals = [AbortSignal.timeout(webhook.timeout), ...(options.signal ? [options.signal] : [])];
    try {
      // No redirects: the event goes where the config says, or nowhere.
      const response = await fetch(webhook.url, { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.any(signals) });
      await response.body?.cancel();
      if (response.status >= 200 && response.status < 300) return { webhook: name, delivered: true, attempts: attempt, status: response.status };
      last = failed(attempt, `it answered HTTP ${response.status}`, { status: response.status });
      if (!retryable(response.status)) break;
    } catch (cause) {
      const timedOut = cause instanceof Error && cause.name === 'TimeoutError';
      const detail = timedOut ? `no answer within ${webhook.timeout / 1000} s` : `${(cause as Error).message}${causeOf(cause)}`;
      last = failed(attempt, detail, { cause });
      if (options.signal?.aborted) break;
    }
  }
  return last!;
}

/** fetch says "fetch failed" and keeps the reason (ECONNREFUSED ...) in its cause. */
function causeOf(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause ? `: ${cause.code ?? cause.message}` : '';
}
