/**
 * `vmdr serve`'s control socket (plugin/control/) against what a local client may send: it is
 * private (0600 in a 0700 directory, refused in a directory others may enter), small requests only,
 * a half-sent request is dropped, another text of the config sends the CLI back to running the
 * sync itself, a second daemon of one config is refused, a stale socket is taken over, and a sync
 * of a protection that does not exist fails with the very line the CLI prints without a daemon.
 * The sites are libvirt's test driver: nothing here reaches a sync's libvirt work.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { handOffSync } from '../../plugin/control/client.js';
import { startControlServer, type ControlServer } from '../../plugin/control/server.js';
import { loadConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { StateStore } from '../../plugin/state/store.js';
import { rejectsWith } from '../helpers/assertions.js';

describe('the control socket of vmdr serve', function () {
  this.timeout(30_000);
  let root: string;
  let file: string;
  let state: StateStore;
  let sites: SiteConnections;
  let server: ControlServer | undefined;
  const saved = process.env.VMDR_CONTROL_DIR;

  const start = async () => {
    const { config, fingerprint } = await loadConfig(file);
    return startControlServer(file, { file, config, fingerprint, sites, state });
  };
  /** One raw request on the socket: its status and body. */
  const ask = (body: string, path = '/v1/sync') =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ socketPath: server!.socket, method: 'POST', path }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const codeOf = (body: string) => (JSON.parse(body) as { error: { code: string } }).error.code;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-control-'));
    process.env.VMDR_CONTROL_DIR = join(root, 'run');
    file = join(root, 'vmdr.yaml');
    await writeFile(
      file,
      `version: 1
state: { path: ${join(root, 'state.db')} }
sites:
  - { name: prod, uri: "test:///default" }
  - { name: dr, uri: "test:///default", storage: ${join(root, 'replicas')}, endpoint: { listen: "127.0.0.1:1", credentials: ${join(root, 'dr')} } }
protections:
  - { name: web, source: { site: prod, vm: test }, target: { site: dr, vm: web-dr, nics: [{ network: n }] } }
`,
    );
    const { config } = await loadConfig(file);
    state = StateStore.open(config.state.path);
    sites = new SiteConnections(config, file);
    server = await start();
  });

  after(async () => {
    await server?.close();
    await sites?.close();
    state?.close();
    if (saved === undefined) delete process.env.VMDR_CONTROL_DIR;
    else process.env.VMDR_CONTROL_DIR = saved;
    await rm(root, { recursive: true, force: true });
  });

  it('is a socket only its owner reaches, in a directory only its owner enters', async () => {
    assert.equal((await stat(server!.socket)).mode & 0o777, 0o600);
    assert.equal((await stat(join(root, 'run'))).mode & 0o777, 0o700);
    const open = join(root, 'open');
    await mkdir(open, { mode: 0o755 });
    await chmod(open, 0o755);
    process.env.VMDR_CONTROL_DIR = open;
    try {
      const err = await rejectsWith(start(), 'CONTROL_DIR_UNSAFE');
      assert.match(err.message, /must be a directory of this user with mode 0700 \(it is 755/);
    } finally {
      process.env.VMDR_CONTROL_DIR = join(root, 'run');
    }
  });

  it('refuses what is not a small sync request, and answers the next one', async () => {
    const big = await ask(JSON.stringify({ vm: 'x'.repeat(5000) }));
    assert.deepEqual([big.status, codeOf(big.body)], [413, 'BODY_TOO_LARGE']);
    const garbage = await ask('{"vm": ');
    assert.deepEqual([garbage.status, codeOf(garbage.body)], [400, 'BAD_REQUEST']);
    const unknownField = await ask(JSON.stringify({ vm: 'web', fingerprint: '0'.repeat(64), shell: 'rm -rf /' }));
    assert.deepEqual([unknownField.status, codeOf(unknownField.body)], [400, 'BAD_REQUEST']);
    const elsewhere = await ask('{}', '/v1/failover');
    assert.deepEqual([elsewhere.status, codeOf(elsewhere.body)], [404, 'NOT_FOUND']);
    const stale = await ask(JSON.stringify({ vm: 'web', fingerprint: '0'.repeat(64) }));
    assert.deepEqual([stale.status, codeOf(stale.body)], [409, 'CONFIG_CHANGED']);
  });

  it('drops a client that never finishes its request', async () => {
    const socket = connect(server!.socket);
    socket.write('POST /v1/sync HTTP/1.1\r\nHost: x\r\n');
    socket.resume();
    const started = Date.now();
    await new Promise<void>((resolve) => socket.on('close', () => resolve()).on('error', () => undefined));
    const ms = Date.now() - started;
    assert.ok(ms < 5_000, `closed after ${ms} ms`);
  });

  it('fails a sync of a protection that does not exist with the line the CLI prints without a daemon', async () => {
    const err = await rejectsWith(handOffSync(file, { vm: 'no-such-vm' }), 'NOT_IN_CONFIG');
    assert.equal(err.message, `${file}: no protection named "no-such-vm"`);
  });

  it('sends the CLI back to syncing itself when the config changed since the daemon read it', async () => {
    const text = await readFile(file, 'utf8');
    await writeFile(file, `${text}# edited\n`);
    try {
      assert.equal(await handOffSync(file, { vm: 'no-such-vm' }), undefined);
    } finally {
      await writeFile(file, text);
    }
  });

  it('refuses a second daemon of one config, and a new daemon takes over the socket a dead one left', async () => {
    await rejectsWith(start(), 'SERVE_ALREADY_RUNNING');
    await server!.close();
    server = undefined;
    assert.equal(await handOffSync(file, { vm: 'web' }), undefined, 'no daemon: the CLI syncs itself');
    // What kill -9 leaves: the socket file, nobody listening on it.
    const socket = (await start().then(async (s) => (await s.close(), s))).socket;
    const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socket)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(holder.stdout!, 'data');
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    assert.equal((await stat(socket)).isSocket(), true);
    assert.equal(await handOffSync(file, { vm: 'web' }), undefined, 'a socket nobody listens on');
    server = await start();
    await rejectsWith(handOffSync(file, { vm: 'no-such-vm' }), 'NOT_IN_CONFIG');
  });
});
