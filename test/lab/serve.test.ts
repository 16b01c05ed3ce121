/**
 * `vmdr serve` as deployed on two sites: on the DR site `--no-replicate` (receivers only), on the
 * source host `--no-receive` (replication loops only). The loop of a continuous protection keeps
 * cycling, rides out the receiver's absence, and raises an RPO alert once the newest recovery
 * point is older than the RPO: the config's webhook hears of it once, and once when it recovers. While the protection is failed over, the loop pauses (one event, no
 * alert; its source is fenced) and resumes by itself when the role is back to replicating.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { setRole } from '../../plugin/state/roles.js';
import { StateStore } from '../../plugin/state/store.js';
import { createToken } from '../../plugin/tenants/tokens.js';
import { apiCall } from '../helpers/api-client.js';
import { createLabVm, destroyLabVm, GUEST_READY, labBoot, waitForSerialLine, type LabVm } from '../helpers/lab.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';

interface Event {
  event: string;
  result?: { kind: string; point: { id: string } };
  error?: string;
  lagSeconds?: number;
  rpoBreached?: boolean;
  failover?: string;
}

describe('vmdr serve: receivers on the DR site, replication loops on the source host (qemu:///system)', function () {
  this.timeout(240_000);
  let vm: LabVm;
  let config: string;
  /** The same sites and protection, with the state file a source host of its own would have. */
  let sourceConfig: string;
  let receiver: ServeProcess | undefined;
  let loops: ServeProcess | undefined;
  let webhook: WebhookReceiver;

  before(async () => {
    webhook = await startWebhookReceiver();
    vm = await createLabVm('serve', { marker: 'serve', diskSize: '32M' });
    await vm.adapter.start(vm.name);
    await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000 });
    const boot = labBoot();
    config = join(vm.dir, 'vmdr.yaml');
    sourceConfig = join(vm.dir, 'vmdr-source.yaml');
    const yaml = (state: string) => `version: 1
state: { path: ${join(vm.dir, state)} }
sites:
  - { name: prod, uri: "qemu:///system" }
  - name: dr
    uri: "qemu:///system"
    storage: ${join(vm.dir, 'replicas')}
    receiver: { listen: "127.0.0.1:PORT", credentials: ${join(vm.dir, 'receiver')} }
protections:
  - name: ${vm.name}
    source: { site: prod, vm: ${vm.name} }
    continuous: true
    rpo: 5s
    target:
      site: dr
      vm: ${vm.name}-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${vm.network} }]
notifications:
  webhooks:
    - url: ${webhook.url}
`;
    const port = await freeLoopbackPort();
    await writeFile(config, `${yaml('state.db').replace('PORT', String(port))}api: { listen: "127.0.0.1:${await freeLoopbackPort()}" }\n`);
    await writeFile(sourceConfig, yaml('state-source.db').replace('PORT', String(port)));
  });

  after(async () => {
    await loops?.stop();
    await receiver?.stop();
    await webhook?.close();
    await destroyLabVm(vm);
  });

  const waitFor = async (what: string, ok: (events: Event[]) => boolean) => {
    for (const deadline = Date.now() + 90_000; !ok(loops!.events as unknown as Event[]); ) {
      assert.ok(Date.now() < deadline, `${what}: ${JSON.stringify(loops!.events)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const cycles = () => (loops!.events as unknown as Event[]).filter((e) => e.event === 'cycle');

  it('cycles back to back, alerts when the newest point passes the RPO (the webhook once), recovers (the webhook once), stops on SIGTERM', async () => {
    receiver = await startServe(config, { args: ['--no-replicate', '--no-api', '--site', 'dr'] });
    loops = await startServe(config, { args: ['--no-receive', '--site', 'prod'] });
    assert.ok(!loops.events.some((e) => e.event === 'receiver'), 'the source host runs no receiver');
    await waitFor('three committed cycles', () => cycles().filter((c) => c.result).length >= 3);
    const first = cycles().filter((c) => c.result);
    assert.equal(first[0]!.result!.kind, 'full');
    assert.ok(first.slice(1).every((c) => c.result!.kind === 'incremental'));

    await receiver.stop();
    receiver = undefined;
    await waitFor('an RPO alert', (events) => events.some((e) => e.event === 'rpo-breached'));
    const alert = (loops.events as unknown as Event[]).find((e) => e.event === 'rpo-breached')!;
    assert.ok(alert.lagSeconds! > 5, `lag ${alert.lagSeconds}`);
    assert.match(cycles().find((c) => c.error)!.error!, /cannot reach the endpoint of site "dr"/);
    const [breach] = await webhook.waitFor(1, 15_000);
    assert.equal(breach!.json.event, 'rpo-breached');
    assert.equal(breach!.json.protection, vm.name);
    assert.equal(breach!.json.tenant, null);
    assert.equal(breach!.json.rpo, 5);
    assert.ok((breach!.json.lag as number) > 5, `lag ${String(breach!.json.lag)}`);
    console.log(`      the webhook heard of the breach at a lag of ${(breach!.json.lag as number).toFixed(1)} s (RPO 5 s)`);
    // Failed cycles go on while the DR site is away: still only the one breach.
    await waitFor('two more failed cycles', () => cycles().filter((c) => c.error).length >= 3);
    assert.equal(webhook.requests.length, 1, 'one breach, not one per cycle or per check');
    // Prometheus, with an operator's token, sees the same through the daemon's API.
    const api = loops.events.find((e) => e.event === 'api')!;
    const store = StateStore.open(join(vm.dir, 'state.db'));
    const token = createToken(store, { name: 'test-prometheus', role: 'read' }).token;
    store.close();
    const scraped = await apiCall(api.url as string, await readFile(join(api.credentials as string, 'tls.crt')), '/metrics', { token });
    assert.equal(scraped.status, 200);
    const sample = (name: string, extra = '') => {
      const m = new RegExp(`^${name}\\{protection="${vm.name}",tenant="",site="prod"${extra}\\} (\\S+)$`, 'm').exec(scraped.text);
      assert.ok(m, `${name}${extra} in:\n${scraped.text.split('\n').filter((l) => l.startsWith('vmdr_')).join('\n')}`);
      return Number(m[1]);
    };
    assert.equal(sample('vmdr_rpo_breaches_total'), 1);
    assert.ok(sample('vmdr_replication_lag_seconds') > 5);
    assert.ok(sample('vmdr_replication_cycle_failures_total', ',code="PEER_UNREACHABLE"') >= 3);
    assert.ok(sample('vmdr_replication_shipped_bytes_total') > 0);
    assert.ok(sample('vmdr_replication_cycle_duration_seconds_count') >= 3);

    receiver = await startServe(config, { args: ['--no-replicate', '--no-api', '--site', 'dr'] });
    const before = cycles().length;
    await waitFor('a cycle after the receiver is back', () => cycles().slice(before).some((c) => c.result));
    const [, recovered] = await webhook.waitFor(2, 15_000);
    assert.equal(recovered!.json.event, 'rpo-recovered');
    assert.ok((recovered!.json.lag as number) <= 5, `lag ${String(recovered!.json.lag)}`);
    assert.deepEqual((loops.events as unknown as { event: string; alert?: string }[]).filter((e) => e.event === 'rpo-alert').map((e) => e.alert), ['rpo-breached', 'rpo-recovered']);
    await loops.stop();
    assert.equal(await loops.exited, 0);
    assert.equal((loops.events.at(-1) as unknown as Event).event, 'stopped');
    loops = undefined;
    assert.equal(webhook.requests.length, 2);
  });

  it('pauses while the protection is failed over: one event, no retries reported, no RPO alert; resumes after it is given back', async () => {
    receiver ??= await startServe(config, { args: ['--no-replicate', '--no-api', '--site', 'dr'] });
    // A source host of its own: the role lives only in the DR site's state file, so the loop learns
    // it from the receiver's refusal (PROTECTION_FAILED_OVER, HTTP 409).
    loops = await startServe(sourceConfig, { args: ['--no-receive', '--site', 'prod'] });
    await waitFor('a committed cycle', () => cycles().some((c) => c.result));
    const dr = StateStore.open(join(vm.dir, 'state.db'));
    try {
      setRole(dr.db, vm.name, 'failed-over', { failover: 'fo-test-serve' });
      await waitFor('the pause', (events) => events.some((e) => e.event === 'paused'));
      // Its source must not run beside the DR twin: the loop fences it (test/lab/fence.test.ts), once.
      await waitFor('the fence', (events) => events.some((e) => e.event === 'source-fenced'));
      const pausedAt = loops.events.length;
      const paused = (loops.events as unknown as Event[]).filter((e) => e.event === 'paused');
      assert.equal(paused.length, 1);
      assert.equal(paused[0]!.failover, 'fo-test-serve');
      // Longer than the RPO (5 s): a loop still counting lag would raise an alert by now.
      await new Promise((r) => setTimeout(r, 8_000));
      const since = (loops.events as unknown as Event[]).slice(pausedAt);
      assert.deepEqual(since.map((e) => e.event), [], `nothing reported while paused: ${JSON.stringify(since)}`);

      setRole(dr.db, vm.name, 'replicating');
      await waitFor('a committed cycle after the role is back', (events) => events.slice(pausedAt).some((e) => e.event === 'cycle' && e.result));
      const after = (loops.events as unknown as Event[]).slice(pausedAt).map((e) => e.event);
      assert.deepEqual(after.slice(0, 2), ['resumed', 'cycle']);
      assert.ok(!after.includes('paused') && !after.includes('rpo-breached'), after.join(','));
    } finally {
      setRole(dr.db, vm.name, 'replicating');
      dr.close();
    }
    await loops.stop();
    assert.equal(await loops.exited, 0);
    loops = undefined;
  });
});
