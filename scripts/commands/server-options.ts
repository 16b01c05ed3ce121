/**
 * `--server URL`: a command that can drive a running daemon through its API instead of doing the
 * work in this process (sync, status, points). The URL may come from VMDR_SERVER and the
 * certificate's fingerprint from VMDR_SERVER_FINGERPRINT; the token only from VMDR_TOKEN or a file
 * (VMDR_TOKEN_FILE, --token-file), never from argv, where every user of the host could read it.
 */
import type { Argv } from 'yargs';
import { ApiClient } from '../../plugin/api/client.js';
import { TokenMissing } from '../../plugin/tenants/token-errors.js';
import { readTokenFromEnvironment } from '../../plugin/tenants/token-source.js';

export interface ServerOptions {
  server?: string;
  'server-fingerprint'?: string;
  'token-file'?: string;
}

export function withServerOptions<T>(y: Argv<T>): Argv<T & ServerOptions> {
  return y
    .option('server', { type: 'string', describe: 'Do it through the API of the vmdr serve at this https:// URL (default $VMDR_SERVER); the token from $VMDR_TOKEN or --token-file' })
    .option('server-fingerprint', { type: 'string', describe: "SHA256 fingerprint of that daemon's certificate, as vmdr serve printed it (default $VMDR_SERVER_FINGERPRINT; absent: the system's CAs)" })
    .option('token-file', { type: 'string', describe: 'A file (mode 0600) holding the API token (default $VMDR_TOKEN_FILE, or $VMDR_TOKEN itself)' });
}

/** The client of the daemon to drive, or undefined when the work is done here. */
export async function serverOf(argv: ServerOptions): Promise<ApiClient | undefined> {
  const url = argv.server ?? process.env.VMDR_SERVER;
  if (!url) return undefined;
  const fingerprint = argv['server-fingerprint'] ?? process.env.VMDR_SERVER_FINGERPRINT;
  const token = await readTokenFromEnvironment(argv['token-file'] !== undefined ? { tokenFile: argv['token-file'] } : {});
  if (!token) throw new TokenMissing();
  return new ApiClient({ url, token, ...(fingerprint ? { fingerprint } : {}) });
}
