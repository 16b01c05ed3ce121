/**
 * Where a vSphere endpoint is and how to log in to it, from `vsphere://user@host[:port]/Datacenter`
 * (query: thumbprint, datastore, pool, folder) plus the site's VsphereOptions, which win over the
 * query. Passwords never travel in URIs: one there is refused. The password is read only when
 * logging in (readPassword), from a file only its owner may read or an environment variable.
 */
import { open } from 'node:fs/promises';
import type { VsphereOptions } from '../types.js';
import { VspherePasswordFileOpen, VspherePasswordMissing, VsphereUriInvalid } from './errors.js';

export const DEFAULT_PASSWORD_ENV = 'VMDR_VSPHERE_PASSWORD';
const QUERY_KEYS = ['thumbprint', 'datastore', 'pool', 'folder'] as const;
/** A password file larger than this is not a password file. */
const PASSWORD_FILE_MAX_BYTES = 4096;

export interface VsphereEndpoint {
  /** The URI as given (it never holds a password). */
  uri: string;
  host: string;
  port: number;
  user: string;
  /** Name or inventory path (`Folder/DC1`) of the datacenter. */
  datacenter: string;
  /** `SHA256:AB:CD:…`, upper case with colons. */
  thumbprint?: string;
  caFile?: string;
  datastore?: string;
  pool?: string;
  folder?: string;
  passwordFile?: string;
  passwordEnv: string;
}

export function parseVsphereUri(uri: string, options: VsphereOptions = {}): VsphereEndpoint {
  const invalid = (detail: string) => new VsphereUriInvalid(redactUri(uri), detail);
  if (!/^vsphere:\/\//i.test(uri)) throw invalid('expected vsphere://user@host[:port]/Datacenter');
  // Checked on the raw text: URL parsing would drop an empty password (`user:@host`) silently.
  if (userinfoOf(uri)?.includes(':')) {
    throw invalid('it holds a password; passwords never go in URIs: use passwordFile or passwordEnv');
  }
  let url: URL;
  try {
    url = new URL(uri);
  } catch (cause) {
    throw invalid(`not a URI (${(cause as Error).message})`);
  }
  const user = decodeURIComponent(url.username);
  if (!user) throw invalid('no user name: expected vsphere://user@host/Datacenter');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw invalid('no host');
  const port = url.port ? Number(url.port) : 443;
  const datacenter = url.pathname
    .split('/')
    .filter((s) => s !== '')
    .map((s) => decodeURIComponent(s))
    .join('/');
  if (!datacenter) throw invalid('no datacenter: expected vsphere://user@host/Datacenter');
  if (url.hash) throw invalid('a fragment (#…) means nothing here');

  const query: Partial<Record<(typeof QUERY_KEYS)[number], string>> = {};
  for (const [key, value] of url.searchParams) {
    if (!(QUERY_KEYS as readonly string[]).includes(key)) throw invalid(`unknown setting ${JSON.stringify(key)} (known: ${QUERY_KEYS.join(', ')})`);
    query[key as (typeof QUERY_KEYS)[number]] = value;
  }
  const thumbprintText = options.thumbprint ?? query.thumbprint;
  const thumbprint = thumbprintText === undefined ? undefined : normalizeThumbprint(thumbprintText);
  if (thumbprintText !== undefined && thumbprint === undefined) {
    throw invalid(`thumbprint ${JSON.stringify(thumbprintText)} is not a SHA-256 fingerprint (SHA256: and 32 bytes in hex, colons optional)`);
  }
  return {
    uri,
    host,
    port,
    user,
    datacenter,
    ...(thumbprint ? { thumbprint } : {}),
    ...(options.caFile ? { caFile: options.caFile } : {}),
    ...pick('datastore', options.datastore ?? query.datastore),
    ...pick('pool', options.pool ?? query.pool),
    ...pick('folder', options.folder ?? query.folder),
    ...(options.passwordFile ? { passwordFile: options.passwordFile } : {}),
    passwordEnv: options.passwordEnv ?? DEFAULT_PASSWORD_ENV,
  };
}

function pick<K extends string>(key: K, value: string | undefined): Partial<Record<K, string>> {
  return value ? ({ [key]: value } as Record<K, string>) : {};
}

/** `SHA256:AB:CD:…` (upper case, colons) from any spelling of a SHA-256 fingerprint; undefined if it is none. */
export function normalizeThumbprint(text: string): string | undefined {
  const hex = text.trim().replace(/^sha-?256:/i, '').replace(/:/g, '');
  if (!/^[0-9a-f]{64}$/i.test(hex)) return undefined;
  return `SHA256:${hex.toUpperCase().match(/../g)!.join(':')}`;
}

/**
 * What stands between `vsphere://` and the last '@' before the query: the user, and a password if
 * someone pasted one (which may itself hold '/' or '@').
 */
function userinfoOf(uri: string): string | undefined {
  const rest = uri.slice('vsphere://'.length).split(/[?#]/)[0]!;
  const at = rest.lastIndexOf('@');
  return at < 0 ? undefined : rest.slice(0, at);
}

/** The URI for messages: a pasted password replaced by ***. */
function redactUri(uri: string): string {
  const userinfo = userinfoOf(uri);
  if (userinfo === undefined || !userinfo.includes(':')) return uri;
  return `${uri.slice(0, 'vsphere://'.length)}${userinfo.slice(0, userinfo.indexOf(':'))}:***${uri.slice('vsphere://'.length + userinfo.length)}`;
}

/**
 * The password, read now: from `passwordFile` (refused unless only its owner may read or write it:
 * mode 0600 or stricter) or from the environment variable `passwordEnv`. One trailing newline of a
 * file is not part of the password.
 */
export async function readPassword(endpoint: VsphereEndpoint): Promise<string> {
  if (endpoint.passwordFile) return readPasswordFile(endpoint.passwordFile);
  const value = process.env[endpoint.passwordEnv];
  if (!value) throw new VspherePasswordMissing(endpoint.host, endpoint.passwordEnv);
  return value;
}

async function readPasswordFile(file: string): Promise<string> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (cause) {
    throw new VspherePasswordFileOpen(file, (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be opened (${(cause as NodeJS.ErrnoException).code})`, cause);
  }
  try {
    // The mode of the file actually opened, not of whatever the path names by the time we look.
    const stat = await handle.stat();
    if (!stat.isFile()) throw new VspherePasswordFileOpen(file, 'is not a regular file');
    if ((stat.mode & 0o077) !== 0) {
      throw new VspherePasswordFileOpen(file, `has mode 0${(stat.mode & 0o777).toString(8)}: others than its owner may read or change it`);
    }
    if (stat.size > PASSWORD_FILE_MAX_BYTES) throw new VspherePasswordFileOpen(file, `is ${stat.size} bytes: not a password file`);
    const password = (await handle.readFile({ encoding: 'utf8' })).replace(/\r?\n$/, '');
    if (!password) throw new VspherePasswordFileOpen(file, 'is empty');
    return password;
  } finally {
    await handle.close();
  }
}
