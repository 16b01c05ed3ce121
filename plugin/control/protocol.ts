/** What the CLI and `vmdr serve` say on the control socket (client.ts, server.ts). */
import type { SyncRequest } from '../replication/sync-request.js';

export const SYNC_PATH = '/v1/sync';
/** The daemon read another text of the config: the CLI runs the work itself, with the text it reads. */
export const CONFIG_CHANGED = 'CONFIG_CHANGED';
/** A request body, an answer's line or a refusal larger than this is no one's on this socket. */
export const CONTROL_LINE_BYTES = 1024 * 1024;
export const CONTROL_BODY_BYTES = 4096;

export interface ControlSyncBody extends SyncRequest {
  /** The config text's fingerprint as the CLI read it. */
  fingerprint: string;
}
