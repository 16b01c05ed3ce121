/**
 * Health checks on a real lab guest under qemu:///system: the serial check sees the guest's ready
 * line from this boot, the guest agent check says plainly that the VM has no agent channel (and,
 * on a VM with a channel but no agent inside, keeps asking until the timeout), and a VM forced off
 * while its checks wait fails the wait at once instead of at the timeout.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GuestAgentUnavailable } from '../../hypervisors/types.js';
import { HealthSchema } from '../../plugin/config/schema.js';
import { waitUntilHealthy } from '../../plugin/failover/health.js';
import { rejectsWith } from '../helpers/assertions.js';
import { createLabVm, destroyLabVm, fileSize, GUEST_READY, labBoot, parseGuestFields, type LabVm } from '../helpers/lab.js';

const spec = (health: Record<string, unknown>) => HealthSchema.parse(health);

describe('failover health checks on a lab guest', function () {
  this.timeout(180_000);
  let vm: LabVm | undefined;
  let withChannel: string | undefined;

  before(async () => {
    vm = await createLabVm('health', { marker: 'health-disk' });
  });
  after(async () => {
    if (withChannel && vm) {
      await vm.adapter.stop(withChannel, { mode: 'force' }).catch(() => undefined);
      await vm.adapter.undefine(withChannel).catch(() => undefined);
    }
    await destroyLabVm(vm);
  });

  async function ensureRunning(lab: LabVm): Promise<void> {
    if ((await lab.adapter.powerState(lab.name)) !== 'running') await lab.adapter.start(lab.name);
  }

  it('the serial check passes on this boot\'s ready line and reports it', async () => {
    const lab = vm!;
    const serialFrom = await fileSize(lab.log);
    await lab.adapter.start(lab.name);
    // No serialLog: the wait finds the VM's console file through the adapter, as a failover does.
    const report = await waitUntilHealthy(lab.adapter, lab.name, spec({ serial: '^VMDR-GUEST ready', timeout: '2m' }), { serialFrom });
    assert.deepEqual(
      report.checks.map((c) => c.check),
      ['running', 'serial'],
    );
    const line = report.checks[1]!.detail!;
    const ready = GUEST_READY.exec(line);
    assert.ok(ready, `reported ${JSON.stringify(line)}, not the guest's ready line`);
    assert.equal(parseGuestFields(ready[1]!).marker, 'health-disk');
    assert.ok(report.healthyAfterMs >= report.checks[1]!.afterMs);
  });

  it('the agent check fails at once, saying the VM has no guest agent channel', async () => {
    const lab = vm!;
    await ensureRunning(lab);
    const direct = await rejectsWith(lab.adapter.guestAgentPing(lab.name, 2_000), 'GUEST_AGENT_UNAVAILABLE');
    assert.ok(direct instanceof GuestAgentUnavailable);
    assert.equal(direct.reason, 'not-configured');
    assert.deepEqual(direct.subject, { vm: lab.name, host: 'qemu:///system', reason: 'not-configured' });

    const started = Date.now();
    const err = await rejectsWith(waitUntilHealthy(lab.adapter, lab.name, spec({ agent: true, timeout: '20s' }), {}), 'HEALTH_CHECK_FAILED');
    assert.equal(err.subject.check, 'agent');
    assert.match(err.message, /has no QEMU guest agent channel.*org\.qemu\.guest_agent\.0/);
    assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms: waiting cannot make a channel appear`);
  });

  it('a VM forced off during the wait fails it at once, long before the timeout', async () => {
    const lab = vm!;
    await ensureRunning(lab);
    // A line the guest never prints keeps the wait going until the VM is pulled.
    const waiting = waitUntilHealthy(lab.adapter, lab.name, spec({ serial: '^VMDR-GUEST never', timeout: '2m' }), { serialFrom: await fileSize(lab.log) });
    const failed = rejectsWith(waiting, 'HEALTH_CHECK_FAILED');
    await lab.adapter.stop(lab.name, { mode: 'force' });
    const stoppedAt = Date.now();
    const err = await failed;
    assert.equal(err.subject.check, 'running');
    assert.match(err.message, /the VM is shutoff .* into the health wait/);
    assert.ok(Date.now() - stoppedAt < 3_000, `noticed ${Date.now() - stoppedAt} ms after the VM went off`);
  });

  it('on a VM with an agent channel but no agent inside, the agent check asks until the timeout', async () => {
    const lab = vm!;
    // Without vmdr.agent=on the lab guest runs no qemu-guest-agent: the channel is there, nobody answers on it.
    const template = join(lab.dir, 'with-agent-channel.xml');
    const base = await readFile(join(import.meta.dirname, '..', '..', 'templates', 'domains', 'libvirt-domain.xml'), 'utf8');
    await writeFile(template, base.replace('</devices>', "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices>"));
    withChannel = `${lab.name}-ga`;
    await lab.adapter.stop(lab.name, { mode: 'force' }); // it shares the disk
    await lab.adapter.defineVm({
      name: withChannel,
      memoryMiB: 256,
      vcpus: 1,
      boot: labBoot(),
      disks: [{ path: lab.disk, format: 'qcow2', target: 'vda' }],
      nics: [{ network: lab.network }],
      template,
    });
    await lab.adapter.start(withChannel);
    const answer = await rejectsWith(lab.adapter.guestAgentPing(withChannel, 1_000), 'GUEST_AGENT_UNAVAILABLE');
    assert.equal((answer as GuestAgentUnavailable).reason, 'not-answering');

    const started = Date.now();
    const err = await rejectsWith(waitUntilHealthy(lab.adapter, withChannel, spec({ agent: true, timeout: '3s' }), {}), 'HEALTH_CHECK_FAILED');
    const took = Date.now() - started;
    assert.equal(err.subject.check, 'agent');
    assert.match(err.message, /the guest agent did not answer within 3 s \(\d+ attempts\); last: .*does not answer/);
    assert.ok(took >= 3_000 && took < 6_000, `gave up after ${took} ms`);
  });
});
