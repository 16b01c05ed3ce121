/**
 * The watch on a real source: the lab guest under qemu:///system, watched by `vmdr serve` (the
 * built CLI) every 1 s with missed 3. Destroyed (virsh destroy), it is down within interval ×
 * missed + 1 s of the kill: the daemon logs it, the webhook hears watch-down, `vmdr events` lists it.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { runVmdr } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm, type ProtectedLabVm } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';

describe('watching a lab source (qemu:///system)', function () {
  this.timeout(180_000);
  let lab: ProtectedLabVm | undefined;
  let serve: ServeProcess | undefined;
  let hook: WebhookReceiver;

  const watchEvent = async (state: string, timeoutMs: number) => {
    for (const deadline = Date.now() + timeoutMs; ; await sleep(20)) {
      const e = serve!.events.find((x) => x.event === 'watch' && x.state === state);
      if (e) return e as { at: string; detail: string; protection: string };
      assert.ok(Date.now() < deadline, `no watch ${state} within ${timeoutMs} ms: ${JSON.stringify(serve!.events.filter((x) => x.event === 'watch'))}`);
    }
  };

  before(async () => {
    hook = await startWebhookReceiver();
    lab = await createProtectedLabVm('watch', {
      settings: ['watch: { interval: 1s, missed: 3 }'],
      more: () => `notifications: { webhooks: [{ url: "${hook.url}", events: [watch-down] }] }\n`,
    });
  });

  after(async () => {
    await serve?.stop();
    await hook?.close();
    await destroyProtectedLabVm(lab?.vm, lab?.drNetwork ?? '');
  });

  it('a destroyed source is down within interval × missed + 1 s, logged, told and listed', async () => {
    const { vm, config } = lab!;
    serve = await startServe(config, { args: ['--no-replicate'] });
    await watchEvent('healthy', 5000);
    const killed = Date.now();
    await vm.adapter.stop(vm.name, { mode: 'force' });
    const down = await watchEvent('down', 6000);
    const detectionMs = Date.parse(down.at) - killed;
    console.log(`      detection: ${detectionMs} ms (interval 1 s, missed 3; target 4000 ms)`);
    assert.ok(detectionMs <= 3 * 1000 + 1000, `down ${detectionMs} ms after the kill`);
    assert.match(down.detail, new RegExp(`; vm: source VM ${vm.name} is shutoff$`));
    const [told] = await hook.waitFor(1, 5000);
    assert.deepEqual([told!.headers['x-vmdr-event'], told!.json.protection, told!.json.state], ['watch-down', vm.name, 'down']);
    const listed = await runVmdr(['events', '--json', '--config', config]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      listed.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { state: string }).state),
      ['healthy', 'suspect', 'down'],
    );
  });
});
