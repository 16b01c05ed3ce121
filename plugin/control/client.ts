/**
 * `vmdr sync` handed to the host's running `vmdr serve` (server.ts): the daemon already holds the
 * site connections, the state file and a warm libvirt binding, so a one-shot sync costs the CLI
 * only its own start and one local request. Nothing is handed over when no daemon serves this
 * config, or it serves another text of it (edited since it started): the caller then runs the
 * sync itself, as before there was a daemon.
 */
import { request, type IncomingMessage } from 'node:http';
import { VmdrError } from '../../hypervisors/errors.js';
import type { Progress } from '../../hypervisors/types.js';
import type { SyncResult } from '../replication/sync.js';
import type { SyncRequest } from '../replication/sync-request.js';
import { readAll, readLines, rebuildError, resultOf } from '../sites/ndjson.js';
import { controlAddress, type ControlAddress } from './address.js';
import { CONFIG_CHANGED, CONTROL_LINE_BYTES, SYNC_PATH, type ControlSyncBody } from './protocol.js';

/** Socket errors that mean no daemon listens there: run the work here instead. */
const NO_DAEMON = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK']);

export class ControlLost extends VmdrError {
  constructor(socket: string, detail: string, cause?: unknown) {
    super('SERVE_LOST', `vmdr serve (control socket ${socket}) ${detail} before the sync's result`, {
      subject: { path: socket },
      cause,
      remedy: 'the sync may or may not have committed a point: `vmdr points VM` shows; run the sync again',
    });
  }
}

/** The sync's result from the daemon, or undefined when there is none to hand it to. */
export async function handOffSync(configFile: string, ask: SyncRequest, options: { onProgress?: (p: Progress) => void; signal?: AbortSignal } = {}): Promise<SyncResult | undefined> {
  const address = await controlAddress(configFile);
  if (!address) return undefined;
  const res = await post(address, SYNC_PATH, { ...ask, fingerprint: address.fingerprint } satisfies ControlSyncBody, options.signal);
  if (!res) return undefined;
  const lost = (detail: string, cause?: unknown) => new ControlLost(address.socket, detail, cause);
  if (res.statusCode !== 200) {
    const refusal = await refusalOf(res, lost);
    if (refusal.code === CONFIG_CHANGED) return undefined;
    throw refusal;
  }
  try {
    return await resultOf<SyncResult>(readLines(res, CONTROL_LINE_BYTES, (what, cause) => lost(`sent ${what}`, cause)), options.onProgress, () => lost('ended'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') throw lost('closed the connection', err);
    throw err;
  }
}

/** The response, or undefined when nobody listens on the socket. */
function post(address: ControlAddress, path: string, body: unknown, signal?: AbortSignal): Promise<IncomingMessage | undefined> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: address.socket, method: 'POST', path, headers: { 'content-type': 'application/json' }, ...(signal ? { signal } : {}) });
    req.on('response', resolve);
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code && NO_DAEMON.has(err.code)) resolve(undefined);
      else reject(err.name === 'AbortError' ? err : new ControlLost(address.socket, 'failed', err));
    });
    req.end(JSON.stringify(body));
  });
}

async function refusalOf(res: IncomingMessage, lost: (detail: string, cause?: unknown) => ControlLost): Promise<VmdrError> {
  try {
    const { error } = JSON.parse((await readAll(res, CONTROL_LINE_BYTES)).toString('utf8')) as { error: { code: string; message: string } };
    return rebuildError(error, res.statusCode !== undefined && res.statusCode < 500);
  } catch (err) {
    return lost(`answered ${res.statusCode}`, err);
  }
}
