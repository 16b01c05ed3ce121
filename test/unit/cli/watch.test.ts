/**
 * The watch as an operator sees it, through the built CLI on libvirt's test driver: `vmdr serve`
 * beats the watched sources (the daemon's test driver runs VM `test`; `no-such-vm` is missing),
 * logs each change of state, tells the webhook; `vmdr events` lists them (--json, --protection),
 * `--follow` prints them as they come until Ctrl-C, and `vmdr status` shows each watch's state.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertOneLineError } from '../../helpers/assertions.js';
import { runVmdr, spawnVmdr } from '../../helpers/lab.js';
import { startServe, type ServeProcess } from '../../helpers/vmdr-serve.js';
import { startWebhookReceiver, type WebhookReceiver } from '../../helpers/webhook-receiver.js';

describe('vmdr serve watching, vmdr events, vmdr status', function () {
  this.timeout(60_000);
  let dir: string;
  let config: string;
  let serve: ServeProcess | undefined;
  let hook: WebhookReceiver;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-cli-watch-'));
    config = join(dir, 'vmdr.yaml');
    hook = await startWebhookReceiver();
    await writeFile(
      config,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: src, uri: "test:///default" }
  - { name: dr, uri: "test:///default", storage: ${join(dir, 'replicas')} }
notifications: { webhooks: [{ url: "${hook.url}", events: [watch-down] }] }
protections:
  - { name: web, source: { site: src, vm: test }, target: { site: dr, vm: web-dr, nics: [{ network: default }] } }
  - { name: ghost, source: { site: src, vm: no-such-vm }, target: { site: dr, vm: ghost-dr, nics: [{ network: default }] } }
  - { name: plain, source: { site: src, vm: test }, target: { site: dr, vm: plain-dr, nics: [{ network: default }] } }
plans:
  - name: shop
    groups: [{ name: all, vms: [web, ghost] }]
    watch: { interval: 1s, missed: 3 }
`,
    );
  });

  after(async () => {
    await serve?.stop();
    await hook?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('has no events before the daemon ran; an unknown protection is one line', async () => {
    const none = await vmdr('events');
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, `${config}: no watch events on this host\n`);
    assertOneLineError(await vmdr('events', '--protection', 'nope'), new RegExp(`^vmdr: ${config}: no protection named "nope"$`));
  });

  it('records, logs and tells a missing source down within interval × missed + 1 s; --follow prints each change as it comes', async () => {
    const follow = spawnVmdr(['events', '--follow', '--json', '--config', config]);
    let followed = '';
    follow.process.stdout!.setEncoding('utf8').on('data', (c: string) => (followed += c));
    await sleep(500);
    const started = Date.now();
    serve = await startServe(config, { args: ['--no-replicate'], env: { VMDR_CONTROL_DIR: join(dir, 'run') } });
    const watching = serve.events.filter((e) => e.event === 'watching').map((e) => [e.protection, e.plan, e.intervalMs, e.missed, e.afterMs, e.policy]);
    assert.deepEqual(watching, [['web', 'shop', 1000, 3, 3000, 'notify'], ['ghost', 'shop', 1000, 3, 3000, 'notify']]);

    const [down] = await hook.waitFor(1, 8000);
    assert.ok(Date.now() - started <= 3000 + 1000 + 3000, 'the daemon start (under 3 s) and the detection (interval × missed + 1 s)');
    assert.equal(down!.headers['x-vmdr-event'], 'watch-down');
    assert.deepEqual([down!.json.protection, down!.json.plan, down!.json.site, down!.json.state, down!.json.policy], ['ghost', 'shop', 'src', 'down', 'notify']);
    assert.match(String(down!.json.detail), /beats missed, no answer for 3\.\d s; vm: source VM no-such-vm is missing on site src$/);
    const logged = serve.events.filter((e) => e.event === 'watch').map((e) => [e.protection, e.state]);
    assert.deepEqual(logged.filter(([p]) => p === 'ghost'), [['ghost', 'suspect'], ['ghost', 'down']]);
    assert.deepEqual(logged.filter(([p]) => p === 'web'), [['web', 'healthy']]);

    for (const deadline = Date.now() + 3000; followed.split('\n').filter(Boolean).length < 3; await sleep(50)) assert.ok(Date.now() < deadline, `--follow printed: ${followed}`);
    follow.process.kill('SIGINT');
    const ended = await follow.done;
    assert.equal(ended.code, 0, ended.stderr);
    const lines = followed.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(lines.map((l) => `${l.protection} ${l.state}`).sort(), ['ghost down', 'ghost suspect', 'web healthy']);
  });

  it('lists the events (--json, --protection) and shows each watch in vmdr status', async () => {
    const ghost = await vmdr('events', '--protection', 'ghost', '--json');
    assert.equal(ghost.code, 0, ghost.stderr);
    const rows = ghost.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(rows.map((r) => [r.protection, r.site, r.state]), [['ghost', 'src', 'suspect'], ['ghost', 'src', 'down']]);
    const text = await vmdr('events');
    assert.match(text.stdout, /^\S+Z {2}ghost {2}down {2}\(source site src\): \d beats missed/m);

    const status = await vmdr('status', '--json');
    assert.equal(status.code, 0, status.stderr);
    const watch = Object.fromEntries((JSON.parse(status.stdout) as { protection: string; watch: Record<string, unknown> | null }[]).map((r) => [r.protection, r.watch]));
    assert.equal(watch.plain, null);
    assert.deepEqual([watch.ghost?.state, watch.ghost?.policy, watch.ghost?.plan], ['down', 'notify', 'shop']);
    assert.equal(watch.web?.state, 'healthy');
    const table = await vmdr('status');
    assert.match(table.stdout, /^ghost .* down \(notify\) /m);
  });
});
