/**
 * A client of vmdr's HTTP API for tests, as a portal would be one: HTTPS to loopback, trusting only
 * the daemon's own certificate, a bearer token in the header.
 */
import { request } from 'node:https';

export interface ApiAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed, when it is JSON. */
  json: any;
}

export interface ApiCall {
  method?: string;
  token?: string;
  /** Sent as JSON; a string or Buffer is sent as it is (with content-type application/json). */
  body?: unknown;
  headers?: Record<string, string>;
}

export function apiCall(base: string, ca: Buffer, path: string, call: ApiCall = {}): Promise<ApiAnswer> {
  const body = call.body === undefined ? undefined : typeof call.body === 'string' || Buffer.isBuffer(call.body) ? call.body : JSON.stringify(call.body);
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, base),
      {
        method: call.method ?? 'GET',
        ca,
        headers: {
          ...(call.token ? { authorization: `Bearer ${call.token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...call.headers,
        },
        timeout: 60_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within 60 s`)));
    req.end(body);
  });
}

/** The server-sent events of a stream, until the server ends it: [event name, parsed data]. */
export async function readEvents(base: string, ca: Buffer, path: string, token: string): Promise<[string, any][]> {
  const answer = await apiCall(base, ca, path, { token });
  if (answer.status !== 200) throw new Error(`${path}: ${answer.status} ${answer.text}`);
  return answer.text
    .split('\n\n')
    .map((block) => block.split('\n').filter((l) => !l.startsWith(':')))
    .filter((lines) => lines.length > 0 && lines[0] !== '')
    .map((lines) => {
      const name = lines.find((l) => l.startsWith('event: '))!.slice('event: '.length);
      const data = lines.find((l) => l.startsWith('data: '))!.slice('data: '.length);
      return [name, JSON.parse(data)];
    });
}
