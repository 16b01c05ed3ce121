/**
 * A webhook endpoint on 127.0.0.1 for tests: a real HTTP server that keeps every request it got
 * (headers and raw body) and answers with the statuses it is told, in turn (then 204), or not at all.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface WebhookRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  json: Record<string, unknown>;
}

export interface WebhookReceiver {
  url: string;
  requests: WebhookRequest[];
  /** Statuses of the next answers, in turn; 'hang' never answers. Empty: 204. */
  answers: (number | 'hang')[];
  /** Resolves when `count` requests came, fails the test after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<WebhookRequest[]>;
  close(): Promise<void>;
}

export async function startWebhookReceiver(path = '/hooks/vmdr'): Promise<WebhookReceiver> {
  const requests: WebhookRequest[] = [];
  const answers: (number | 'hang')[] = [];
  const hanging: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(body) as Record<string, unknown>;
      } catch {
        // kept as the raw body; the test's assertion says what was wrong
      }
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, json });
      const answer = answers.shift() ?? 204;
      if (answer === 'hang') hanging.push(res);
      else res.writeHead(answer).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${path}`,
    requests,
    answers,
    async waitFor(count, timeoutMs = 10_000) {
      for (const deadline = Date.now() + timeoutMs; requests.length < count; await sleep(20)) {
        assert.ok(Date.now() < deadline, `expected ${count} webhook requests within ${timeoutMs} ms, got ${requests.length}`);
      }
      return requests.slice(0, count);
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
