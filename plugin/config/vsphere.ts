/**
 * A vSphere site in the config: its URI (`vsphere://user@host[:port]/Datacenter[?thumbprint=…]`)
 * and its `vsphere:` settings (how vmdr logs in, whom it trusts, where it puts what it makes).
 * Checked with the config (schema.ts), so that `vmdr config check` names the key that is wrong before
 * anything connects; the adapter parses the same URI again when it opens the site.
 *
 * A password never travels in the config's URI (nor in a flag): a config is read by many, and a
 * URI ends up in logs and `ps`. It is read from a file only its owner may read, or the environment.
 */

/** Where the password goes instead, in the words the refusal of a URI with one uses. */
export const PASSWORD_PLACES =
  'a password never goes in the URI: put it in a file named by vsphere.passwordFile (mode 0600) or in the environment variable VMDR_VSPHERE_PASSWORD (vsphere.passwordEnv names another)';

const HEX_PAIRS = /^[0-9a-f]{64}$|^[0-9a-f]{2}(:[0-9a-f]{2}){31}$/i;

/** SHA-256 of a certificate: 32 bytes in hex, colons between them optional, "SHA256:" before them optional. */
export function isThumbprint(text: string): boolean {
  return HEX_PAIRS.test(text.replace(/^SHA256:/i, ''));
}

export const THUMBPRINT_EXPECTED = 'a SHA-256 certificate fingerprint: 32 bytes in hex, colons optional, such as SHA256:6B:1F:…:9C (openssl x509 -noout -fingerprint -sha256)';

/** `scheme://user:password@host…`: "user:@host" too, whose colon says a password was meant to be there. */
export function carriesPassword(uri: string): boolean {
  return /^[^/]*\/\/[^@/?#]*:[^@/?#]*@/.test(uri);
}

/** What the URI's query may say besides the settings (which win over it). */
const QUERY_KEYS = ['thumbprint', 'datastore', 'pool', 'folder'];

/** What is wrong with a vsphere:// URI; empty when nothing is. Never repeats a password. */
export function vsphereUriProblems(uri: string): string[] {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return ['not a URI such as vsphere://user@vcenter.example.com/Datacenter'];
  }
  if (carriesPassword(uri)) return [PASSWORD_PLACES];
  const problems: string[] = [];
  if (url.username === '') problems.push('name the user vmdr logs in as: vsphere://user@host/Datacenter');
  if (url.hostname === '') problems.push('name the host: vsphere://user@host/Datacenter');
  const datacenter = decodeURIComponent(url.pathname.replace(/^\/+|\/+$/g, ''));
  if (datacenter === '') problems.push('name the datacenter after the host: vsphere://user@host/Datacenter');
  for (const key of new Set(url.searchParams.keys())) {
    if (!QUERY_KEYS.includes(key)) problems.push(`unknown query parameter "${key}": expected ${QUERY_KEYS.join(', ')}`);
  }
  const pin = url.searchParams.get('thumbprint');
  if (pin !== null && !isThumbprint(pin)) problems.push(`thumbprint: expected ${THUMBPRINT_EXPECTED}`);
  return problems;
}
