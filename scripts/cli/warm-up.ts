/**
 * For commands that will reach their sites' hypervisors at once (a failover, a failback): the
 * adapters of the URIs the config names are loaded, and their first call threads started, while
 * the command's own modules load. Without it a failover's run began, then loaded the libvirt
 * adapter and started its first call thread (libvirt loaded in it): its preflight began 75-88 ms
 * into the run, inside the RTO, while the second core had sat idle during the 0.3-0.5 s the
 * command spent loading. With it, 36-38 ms (the lab's 6-VM plan, 2026-12-02).
 *
 * The URIs are read from the config's text with a pattern, not the YAML parser and the schema
 * (which the command loads anyway, later): a miss only means no warm-up, and the config's real
 * load reports what is wrong with it.
 */
import { readFileSync, statSync } from 'node:fs';
import { MAX_CONFIG_BYTES } from '../../plugin/config/text.js';
import { configArgument } from './config-argument.js';

const URI = /^\s*(?:-\s+)?uri:\s*["']?([a-z][a-z0-9+.-]*:\/\/[^\s"'#]*)/gim;

export function warmUpSites(argv: readonly string[] = process.argv): void {
  try {
    const file = configArgument(argv);
    if (statSync(file).size > MAX_CONFIG_BYTES) return;
    const uris = configuredUris(readFileSync(file, 'utf8'));
    if (uris.length === 0) return;
    void import('../../hypervisors/load.js').then((m) => m.warmUp(uris), () => undefined);
  } catch {
    // No config to read here: the command says so itself.
  }
}

/** The hypervisor URIs a config's text names (its sites' `uri:` keys), by pattern. */
export function configuredUris(text: string): string[] {
  return [...text.matchAll(URI)].map((m) => m[1]!);
}
