/**
 * What each command loads (issue 11: a CLI that starts fast). Every module a command loads costs
 * start-up time, so a command loads only what it uses: `vmdr --help` none of vmdr's core, `vmdr
 * config check` no hypervisor and no state file, `vmdr points` no hypervisor, `vmdr status` and
 * `vmdr sync` neither the HTTPS server nor the failover runner. The built CLI runs with a module
 * resolve hook that writes down every module it loads; the commands run against libvirt's test
 * driver. bench:cli measures the time itself.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const CLI = join(ROOT, 'dist', 'scripts', 'vmdr.js');

// A resolve hook, registered before the CLI starts, that appends each module's URL to a file.
const HOOKS = `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  appendFileSync(process.env.VMDR_TEST_MODULE_TRACE, resolved.url + '\\n');
  return resolved;
}`;
const REGISTER = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});`;

interface Loaded {
  code: number;
  stdout: string;
  stderr: string;
  /** vmdr's own modules, relative to dist/ (plugin/sites/connections.js), and packages by name. */
  modules: Set<string>;
  packages: Set<string>;
}

async function runTraced(dir: string, args: string[]): Promise<Loaded> {
  const trace = join(dir, `trace-${args[0]}-${Date.now()}.txt`);
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(
      process.execPath,
      ['--import', `data:text/javascript,${encodeURIComponent(REGISTER)}`, CLI, ...args],
      { env: { ...process.env, VMDR_TEST_MODULE_TRACE: trace } },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    ),
  );
  const urls = (await readFile(trace, 'utf8')).split('\n').filter(Boolean);
  const dist = `file://${join(ROOT, 'dist')}/`;
  const modules = new Set(urls.filter((u) => u.startsWith(dist)).map((u) => u.slice(dist.length)));
  const packages = new Set(urls.map((u) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u)?.[1]).filter((p): p is string => Boolean(p)));
  return { code, stdout, stderr, modules, packages };
}

/** Fails naming what was loaded that should not have been. */
function assertNotLoaded(loaded: Loaded, what: { modules?: string[]; packages?: string[] }): void {
  const modules = [...loaded.modules].filter((m) => (what.modules ?? []).some((prefix) => m.startsWith(prefix)));
  const packages = (what.packages ?? []).filter((p) => loaded.packages.has(p));
  assert.deepEqual({ modules, packages }, { modules: [], packages: [] });
}

const HYPERVISOR = { modules: ['hypervisors/libvirt/'], packages: ['koffi', 'fast-xml-parser'] };
const DAEMON = { modules: ['plugin/replication/receiver/', 'plugin/failover/runner.js'], packages: ['fastify', 'pino'] };

describe('what each command loads (scripts/commands/index.ts)', () => {
  let dir: string;
  let config: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-cli-start-'));
    await mkdir(join(dir, 'replicas'));
    config = join(dir, 'vmdr.yaml');
    // Port 9 (discard) on loopback: nothing answers there, and sync stops before it asks.
    await writeFile(
      config,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: source, uri: "test:///default" }
  - { name: dr, uri: "test:///default", storage: ${join(dir, 'replicas')}, endpoint: { listen: "127.0.0.1:9" } }
protections:
  - name: web
    source: { site: source, vm: test }
    target: { site: dr, vm: web-dr, nics: [{ network: default }] }
`,
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('vmdr --help: the list of commands, and none of their modules', async () => {
    const help = await runTraced(dir, ['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /vmdr sync \[vm\]\s+Ship what changed on a protected VM/);
    assertNotLoaded(help, { modules: ['plugin/', 'scripts/commands/status.js', 'hypervisors/libvirt/'], packages: ['zod', 'yaml', 'better-sqlite3', ...HYPERVISOR.packages, ...DAEMON.packages] });
  });

  it('vmdr config check: the config, no hypervisor and no state file', async () => {
    const check = await runTraced(dir, ['config', 'check', config, '--json']);
    assert.equal(check.code, 0, check.stderr);
    assert.equal(JSON.parse(check.stdout).protections, 1);
    assertNotLoaded(check, { modules: [...HYPERVISOR.modules, 'plugin/state/'], packages: [...HYPERVISOR.packages, 'better-sqlite3', ...DAEMON.packages] });
  });

  it('vmdr points: the DR storage held here, no hypervisor', async () => {
    const points = await runTraced(dir, ['points', 'web', '--json', '--config', config]);
    assert.equal(points.code, 0, points.stderr);
    assert.deepEqual(JSON.parse(points.stdout), []);
    assertNotLoaded(points, { modules: [...HYPERVISOR.modules, 'plugin/replication/sync.js'], packages: [...HYPERVISOR.packages, 'zstd-napi', ...DAEMON.packages] });
  });

  it('vmdr status: the hypervisor, but neither the sender nor the daemon', async () => {
    const status = await runTraced(dir, ['status', '--json', '--config', config]);
    assert.equal(status.code, 0, status.stderr);
    const [row] = JSON.parse(status.stdout) as { protection: string; source: { state: string } }[];
    assert.deepEqual([row?.protection, row?.source.state], ['web', 'running']);
    assert.ok([...status.modules].some((m) => m.startsWith('hypervisors/libvirt/')), 'status asks the hypervisor for power states');
    assertNotLoaded(status, { modules: [...DAEMON.modules, 'plugin/replication/sync.js', 'plugin/replication/nbd/'], packages: ['zstd-napi', ...DAEMON.packages] });
  });

  it('vmdr token: the state file, no hypervisor and no daemon', async () => {
    const list = await runTraced(dir, ['token', 'list', '--json', '--config', config]);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout), []);
    assertNotLoaded(list, { modules: [...HYPERVISOR.modules, 'plugin/replication/', 'plugin/sites/'], packages: [...HYPERVISOR.packages, 'zstd-napi', ...DAEMON.packages] });
  });

  it('vmdr report verify: the report and the key, no hypervisor, no runner, no state file', async () => {
    const key = join(dir, 'not-a-key.pem');
    await writeFile(key, 'no key here\n');
    const verify = await runTraced(dir, ['report', 'verify', join(dir, 'report.html'), '--key', key]);
    assert.equal(verify.code, 1);
    assert.match(verify.stderr, /^vmdr: report signing key \S+not-a-key\.pem: not a public key in PEM\n$/);
    assert.ok(verify.modules.has('plugin/reports/verify.js'));
    assertNotLoaded(verify, { modules: [...HYPERVISOR.modules, 'plugin/failover/runner.js', 'plugin/state/', 'plugin/sites/'], packages: [...HYPERVISOR.packages, 'better-sqlite3', ...DAEMON.packages] });
  });

  it('vmdr sync: the sender, but neither the continuous loop nor the daemon', async () => {
    // No credentials made for this site: the sync stops there, with its own modules loaded.
    const sync = await runTraced(dir, ['sync', 'web', '--json', '--config', config]);
    assert.equal(sync.code, 1);
    assert.equal(JSON.parse(sync.stderr).error.code, 'CREDENTIALS_UNAVAILABLE');
    assert.ok(sync.modules.has('plugin/replication/sync.js'));
    assertNotLoaded(sync, { modules: [...DAEMON.modules, 'plugin/replication/continuous.js', 'plugin/failover/'], packages: DAEMON.packages });
  });
});
