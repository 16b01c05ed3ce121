/**
 * `vmdr serve` takes a changed config without a restart: an edit of its file, SIGHUP, and a change
 * made through its own API each start the loops of protections added and stop those removed (a
 * bandwidth limit changes without either); a config that does not load is a warning and the daemon runs on with the one it had; what needs a
 * restart (the sites) says so. The real CLI as a child process, on libvirt's test driver.
 */
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StateStore } from '../../../plugin/state/store.js';
import { createToken } from '../../../plugin/tenants/tokens.js';
import { apiCall } from '../../helpers/api-client.js';
import { freePort } from '../../helpers/nbd-servers.js';
import { startServe, type ServeProcess } from '../../helpers/vmdr-serve.js';

describe('vmdr serve: reloading its config', function () {
  this.timeout(60_000);
  let dir: string;
  let config: string;
  let serve: ServeProcess;
  let token: string;
  let port: number;
  const protection = (name: string) => `  - { name: ${name}, source: { site: src, vm: test }, target: { site: dr, vm: ${name}-dr, nics: [{ network: default }] }, rpo: 10m }\n`;
  const text = (protections: string[], extraSite = '') => `version: 1
state: { path: ${join(dir, 'state.db')} }
api: { listen: "127.0.0.1:${port}" }
sites:
  - { name: src, uri: "test:///default" }
  - { name: dr, uri: "test:///default", storage: ${join(dir, 'replicas')} }
${extraSite}protections:
${protections.map(protection).join('')}`;
  /** The next event of `kind` printed after the `from`th event. */
  const nextEvent = async (kind: string, from: number, timeoutMs = 10_000, also: (e: Record<string, unknown>) => boolean = () => true) => {
    for (const end = Date.now() + timeoutMs; Date.now() < end; await sleep(50)) {
      const e = serve.events.slice(from).find((x) => x.event === kind && also(x));
      if (e) return e as Record<string, any>;
    }
    throw new Error(`no ${kind} event within ${timeoutMs} ms; events: ${JSON.stringify(serve.events.slice(from))}\n${serve.stderr()}`);
  };
  const api = () => serve.events.find((e) => e.event === 'api') as { url: string };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-reload-'));
    config = join(dir, 'vmdr.yaml');
    port = await freePort();
    await writeFile(config, text(['alpha']));
    const state = StateStore.open(join(dir, 'state.db'));
    token = createToken(state, { name: 'ops', role: 'operate' }).token;
    state.close();
    serve = await startServe(config, { args: ['--no-receive'], env: { VMDR_CONTROL_DIR: join(dir, 'run') } });
  });

  after(async () => {
    await serve?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('starts the loop of a protection added by an edit of the file, and stops the one removed', async () => {
    const from = serve.events.length;
    await writeFile(config, text(['beta']));
    const e = await nextEvent('reloaded', from);
    assert.equal(e.why, 'file');
    assert.deepEqual(e.changed, ['protections']);
    assert.deepEqual(e.loops, { started: ['beta'], stopped: ['alpha'], restarted: [] });
  });

  it('restarts the loop of a protection whose entry changed, and leaves the others alone', async () => {
    let from = serve.events.length;
    await writeFile(config, text(['beta', 'gamma']));
    await nextEvent('reloaded', from);
    from = serve.events.length;
    await writeFile(config, text(['beta', 'gamma']).replace('gamma-dr, nics: [{ network: default }] }, rpo: 10m', 'gamma-dr, nics: [{ network: default }] }, rpo: 20m'));
    const e = await nextEvent('reloaded', from);
    assert.deepEqual(e.loops, { started: [], stopped: [], restarted: ['gamma'] });
  });

  it('takes a new bandwidth of a protection and of a site link in place: no loop restarted, no restart needed', async () => {
    const from = serve.events.length;
    const limited = text(['beta', 'gamma'])
      .replace('gamma-dr, nics: [{ network: default }] }, rpo: 10m', 'gamma-dr, nics: [{ network: default }] }, rpo: 20m, bandwidth: 5MB/s')
      .replace(`storage: ${join(dir, 'replicas')} }`, `storage: ${join(dir, 'replicas')}, bandwidth: [{ limit: 20MB/s, days: mon-fri }] }`);
    await writeFile(config, limited);
    const e = await nextEvent('reloaded', from);
    assert.deepEqual([...e.changed].sort(), ['protections', 'sites']);
    assert.deepEqual(e.restartNeeded, []);
    assert.deepEqual(e.loops, { started: [], stopped: [], restarted: [] });
  });

  it('runs on with the config it had when the file does not load, and says why in one warning', async () => {
    const from = serve.events.length;
    await writeFile(config, text(['beta', 'gamma']).replace('rpo: 10m', 'rpo: soon'));
    const w = await nextEvent('warning', from, 10_000, (e) => e.why === 'file');
    assert.equal(w.code, 'CONFIG_INVALID');
    assert.match(w.message, /protections\[0\]\.rpo/);
    assert.equal(serve.child.exitCode, null, 'still running');
    const listed = await apiCall(api().url, await readFile(join(dir, 'api', 'tls.crt')), '/api/v1/protections', { token });
    assert.deepEqual(listed.json.map((p: { name: string }) => p.name), ['beta', 'gamma'], 'the API answers from the config it had');
  });

  it('reloads on SIGHUP instead of dying of it', async () => {
    serve.child.kill('SIGHUP');
    await sleep(500);
    assert.equal(serve.child.exitCode, null);
    assert.equal(serve.child.signalCode, null);
  });

  it('takes a protection added through its API into its loops and its metrics at once', async () => {
    const before = serve.events.length;
    await writeFile(config, text(['beta']));
    await nextEvent('reloaded', before);
    const ca = await readFile(join(dir, 'api', 'tls.crt'));
    const from = serve.events.length;
    const added = await apiCall(api().url, ca, '/api/v1/protections', {
      method: 'POST',
      token,
      body: { name: 'delta', source: { site: 'src', vm: 'test' }, target: { site: 'dr', vm: 'delta-dr', nics: [{ network: 'default' }] }, rpo: '7m' },
    });
    assert.equal(added.status, 201, added.text);
    const e = serve.events.slice(from).find((x) => x.event === 'reloaded') as Record<string, any> | undefined;
    assert.ok(e, 'reloaded before the API answered');
    assert.equal(e.why, 'api');
    assert.deepEqual(e.loops.started, ['delta']);
    const metrics = await apiCall(api().url, ca, '/metrics', { token });
    assert.match(metrics.text, /vmdr_rpo_seconds\{protection="delta",tenant="",site="src"\} 420/);
  });

  it('keeps running sites as they are and says a restart is needed for them', async () => {
    const from = serve.events.length;
    await writeFile(config, text(['beta', 'delta'], '  - { name: far, uri: "test:///default", storage: /nowhere }\n'));
    const e = await nextEvent('reloaded', from);
    assert.deepEqual(e.restartNeeded, ['sites']);
  });
});
