/**
 * `vmdr serve`'s control socket: the CLI on this host hands it a one-shot sync (client.ts), which
 * runs here on the daemon's own site connections and state file, answering NDJSON progress and
 * the result (or the error, whole: the caller is root on this host, not a peer). The socket is
 * 0600 in a 0700 directory; requests are small and bounded in size and time; a caller that hangs
 * up aborts its sync.
 */
import { chmod, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { z } from 'zod';
import { VmdrError } from '../../hypervisors/errors.js';
import { syncAsAsked, type SyncDeps } from '../replication/sync-request.js';
import type { SyncResult } from '../replication/sync.js';
import { answerStreamed } from '../sites/ndjson.js';
import { controlSocket } from './address.js';
import { privateDirectory, takeOver } from './socket.js';
import { CONFIG_CHANGED, CONTROL_BODY_BYTES, SYNC_PATH } from './protocol.js';

const SyncBody = z.strictObject({
  fingerprint: z.string().regex(/^[0-9a-f]{64}$/),
  vm: z.string().min(1).max(256),
  full: z.boolean().optional(),
  compression: z.enum(['auto', 'off']).optional(),
});

/** Syncs handed over at once; more are refused (each holds a backup job and a receiver stream). */
const MAX_CONNECTIONS = 16;

export interface ControlServer {
  socket: string;
  /** The daemon reloaded its config: syncs handed over must come from a CLI that read this text. */
  reloaded(fingerprint: string): void;
  /** Stops taking requests, aborts the syncs in flight and waits for them to end. */
  close(): Promise<void>;
}

export interface ControlDeps extends SyncDeps {
  /** Of the config text the daemon runs (load.ts). */
  fingerprint: string;
  /** A failure that is vmdr's fault (not the caller's), for the daemon's log. */
  onWarning?: (err: unknown) => void;
  /** A sync handed over ended with this point, for the daemon's log. */
  onSynced?: (result: SyncResult) => void;
}

export async function startControlServer(realConfigPath: string, deps: ControlDeps): Promise<ControlServer> {
  const socket = controlSocket(realConfigPath);
  await privateDirectory(dirname(socket));
  await takeOver(
    socket,
    () =>
      new VmdrError('SERVE_ALREADY_RUNNING', `another vmdr serve runs for ${deps.file}: its control socket ${socket} answers`, {
        subject: { file: deps.file, path: socket },
        remedy: 'stop it first, or run this one with another config',
      }),
  );
  const inFlight = new Set<Promise<void>>();
  const server = createServer({ requestTimeout: 5_000, headersTimeout: 2_000, connectionsCheckingInterval: 500, maxHeaderSize: 8192, keepAliveTimeout: 1_000 }, (req, res) => {
    const done = handle(req, res, deps).catch((err: unknown) => deps.onWarning?.(err));
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  });
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => resolve());
  });
  // Whatever the umask: the directory keeps others out already, this keeps the socket so too.
  await chmod(socket, 0o600);
  return {
    socket,
    reloaded: (fingerprint) => {
      deps.fingerprint = fingerprint;
    },
    close: async () => {
      const closed = new Promise((resolve) => server.close(resolve));
      // A hung-up caller aborts its sync (answerStreamed): so does a daemon that stops.
      server.closeAllConnections();
      await Promise.allSettled([...inFlight]);
      await closed;
      await unlink(socket).catch(() => undefined);
    },
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, deps: ControlDeps): Promise<void> {
  if (req.method !== 'POST' || req.url !== SYNC_PATH) return refuse(res, 404, 'NOT_FOUND', `no ${req.method} ${req.url} here`);
  const text = await readBody(req);
  if (text === undefined) return refuse(res, 413, 'BODY_TOO_LARGE', `a request is at most ${CONTROL_BODY_BYTES} bytes`);
  let body: z.infer<typeof SyncBody>;
  try {
    body = SyncBody.parse(JSON.parse(text));
  } catch {
    return refuse(res, 400, 'BAD_REQUEST', 'not a sync request');
  }
  if (body.fingerprint !== deps.fingerprint) return refuse(res, 409, CONFIG_CHANGED, `${deps.file} changed since vmdr serve read it`);
  const { fingerprint: _, ...ask } = body;
  await answerStreamed(res, {
    waiting: () => ({ phase: 'waiting', done: 0, total: 1, subject: { protection: ask.vm }, detail: 'sync' }),
    gone: () => new VmdrError('CALLER_GONE', `the caller of the sync of ${JSON.stringify(ask.vm)} hung up`),
    errorLine: (err) => {
      if (err instanceof VmdrError) return { error: err.toJSON() as { code: string; message: string }, userError: err.userError };
      deps.onWarning?.(err);
      return { error: { code: 'INTERNAL', message: (err instanceof Error ? err.message : String(err)).split('\n')[0]! }, userError: false };
    },
    work: async (tools) => {
      const result = await syncAsAsked(deps, ask, tools);
      deps.onSynced?.(result);
      return result;
    },
  });
}

/** The body, or undefined when it is larger than a request may be. */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  let text = '';
  for await (const chunk of req) {
    text += (chunk as Buffer).toString('utf8');
    if (text.length > CONTROL_BODY_BYTES) return undefined;
  }
  return text;
}

function refuse(res: ServerResponse, status: number, code: string, message: string): void {
  // The connection ends with the answer: what the caller still sends is not read.
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' }).end(JSON.stringify({ error: { code, message } }));
}
