/**
 * A config on libvirt's test driver, as unit tests of the daemon's parts use it: a fresh temporary
 * directory with the state file and the sites src and dr (dr's storage in it, as on a DR host's
 * daemon), the tenants and protections a test names, and the state and sites opened from it as
 * `vmdr serve` opens them.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../plugin/config/load.js';
import type { Config } from '../../plugin/config/schema.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { StateStore } from '../../plugin/state/store.js';

/** Writes `<new temp dir>/vmdr.yaml`: version, state, the sites src and dr (`dr`: more of dr's fields, `, bandwidth: 5MB/s` say), then `body` (top-level YAML). */
export async function writeTestConfig(prefix: string, body = '', options: { drUri?: string; dr?: string } = {}): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
  const file = join(dir, 'vmdr.yaml');
  await mkdir(join(dir, 'replicas'), { mode: 0o700 });
  await writeFile(
    file,
    `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: src, uri: "test:///default" }
  - { name: dr, uri: "${options.drUri ?? 'test:///default'}", storage: ${join(dir, 'replicas')}${options.dr ?? ''} }
${body}`,
  );
  return { dir, file };
}

/** The tenants acme and globex; `acme`: more of acme's fields (`, quota: { vms: 5 }`, say). */
export const twoTenants = (acme = '') => `tenants:\n  - { name: acme${acme} }\n  - { name: globex }\n`;

/** One protections item per [name, tenant]: the test driver's VM `test` onto `<name>-dr` on dr (no tenant: the operators'). */
export function testProtections(...items: [name: string, tenant?: string][]): string {
  return items
    .map(
      ([name, tenant]) => `  - name: ${name}${tenant ? `\n    tenant: ${tenant}` : ''}
    source: { site: src, vm: test }
    target: { site: dr, vm: ${name}-dr, nics: [{ network: default }] }
`,
    )
    .join('');
}

/** The config read, the state file opened and the sites' connections, as the daemon has them. */
export async function openTestConfig(file: string): Promise<{ config: Config; state: StateStore; sites: SiteConnections }> {
  const { config } = await loadConfig(file);
  return { config, state: StateStore.open(config.state.path), sites: new SiteConnections(config, file) };
}

/** Closes what a suite opened (the API on it too), as far as its set-up got, and removes its directory. */
export async function closeTestConfig(dir: string | undefined, opened: { api?: { close(): Promise<void> }; sites?: SiteConnections; state?: StateStore }): Promise<void> {
  await opened.api?.close();
  await opened.sites?.close();
  opened.state?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
}

/**
 * The test driver's `test` domain running and unfenced, as a fresh test:///default has it. All
 * connections of one process share that driver's state while any of them stays open: a file that
 * stops or fences `test` calls this before it closes its own connections (after, finally), and a
 * file that needs the domain running says so rather than trusting what earlier files left.
 */
export async function testDomainRunning(): Promise<void> {
  const { openAdapter } = await import('../../hypervisors/index.js');
  const { unfenceSource } = await import('../../plugin/sites/fence.js');
  const adapter = openAdapter('test:///default');
  try {
    await unfenceSource(adapter, 'test');
    if ((await adapter.powerState('test')) !== 'running') await adapter.start('test');
  } finally {
    await adapter.close();
  }
}
