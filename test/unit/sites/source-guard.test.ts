/**
 * The source guard's decisions (plugin/sites/source-guard.ts) against a real DR receiver over HTTPS
 * and libvirt's test driver as the source's hypervisor; the start leases are the adapter's own
 * files, in a scratch directory (libvirt's test driver has no qemu hook: the hook's side is
 * start-guard-hook.test.ts, the whole on the lab in test/lab/source-guard.test.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StartLeaseFiles } from '../../../hypervisors/libvirt/start-lease.js';
import { openAdapter } from '../../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../../hypervisors/types.js';
import { parseConfig } from '../../../plugin/config/load.js';
import type { Config } from '../../../plugin/config/schema.js';
import { SiteConnections } from '../../../plugin/sites/connections.js';
import { SourceFences } from '../../../plugin/sites/source-fences.js';
import { SourceGuard, type GuardReport } from '../../../plugin/sites/source-guard.js';
import { setRole } from '../../../plugin/state/roles.js';
import { startTestReceiver, type TestReceiver } from '../../helpers/receiver-instance.js';

describe('the source guard (test:///default, a real receiver)', function () {
  this.timeout(60_000);
  const name = `test-sg-${randomBytes(3).toString('hex')}`;
  let receiver: TestReceiver;
  let adapter: HypervisorAdapter;
  let dir: string;
  let leases: StartLeaseFiles;
  let config: Config;
  let sites: SiteConnections;
  let reports: GuardReport[];
  let stop: AbortController;
  let running: Promise<void> | undefined;
  let guard: SourceGuard;

  const configYaml = (policy: string) => `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: prod, uri: "test:///default" }
  - name: dr
    uri: "test:///default"
    storage: ${join(dir, 'not-here')}
    endpoint: { listen: "${receiver.url.slice('https://'.length)}", credentials: ${receiver.credentials.dir} }
protections:
  - name: ${name}
    source: { site: prod, vm: ${name} }
    target: { site: dr, vm: ${name}-dr, nics: [{ network: test-net }] }
    watch: { policy: ${policy}, interval: 1s, missed: 3 }
`;
  const startGuard = (policy = 'confirm') => {
    config = parseConfig(configYaml(policy), join(dir, 'vmdr.yaml'));
    sites = new (class extends SiteConnections {
      override startLeases = async () => leases;
    })(config, join(dir, 'vmdr.yaml'));
    reports = [];
    stop = new AbortController();
    guard = new SourceGuard({ config, file: join(dir, 'vmdr.yaml'), sites, fences: new SourceFences(sites), onReport: (_p, r) => reports.push(r) });
    guard.set(undefined);
    running = guard.run(stop.signal);
  };
  const stopGuard = async () => {
    stop?.abort();
    await running;
    await sites?.close();
  };
  const until = async (what: string, check: () => boolean | Promise<boolean>, ms = 10_000) => {
    for (const deadline = Date.now() + ms; !(await check()); await sleep(50)) assert.ok(Date.now() < deadline, `${what} within ${ms} ms: ${JSON.stringify(reports)}`);
  };

  before(async () => {
    receiver = await startTestReceiver([{ name }]);
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-guard-'));
    leases = new StartLeaseFiles(join(dir, 'leases'), join(dir, 'refused'));
    adapter = openAdapter('test:///default');
    await adapter.connect();
    await adapter.defineVm({ name, memoryMiB: 128, vcpus: 1, boot: { kind: 'disk' }, disks: [{ path: `/var/lib/vmdr/${name}.qcow2`, format: 'qcow2' }], nics: [], labels: {} });
  });
  afterEach(stopGuard);
  after(async () => {
    await adapter.stop(name, { mode: 'force' }).catch(() => undefined);
    await adapter.undefine(name).catch(() => undefined);
    await adapter.close();
    await receiver.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('not failed over: labels the source, leases it for the watch\'s after, and starts a held autostart', async () => {
    await adapter.setAutostart(name, true);
    // The hook refused its autostart before the daemon ran.
    await mkdir(join(dir, 'refused'), { recursive: true });
    await writeFile(join(dir, 'refused', name), '');
    const asked = Date.now();
    startGuard();
    await until('started', () => reports.some((r) => r.started));
    const info = await adapter.getVm(name);
    assert.equal(info.labels['source-of'], name);
    assert.equal(info.powerState, 'running');
    const lease = (await leases.until(name))!.getTime();
    assert.ok(lease >= Math.floor(asked / 1000) * 1000 && lease <= Date.now() + 3_000, `lease until ${new Date(lease).toISOString()}`);
    assert.deepEqual(await leases.refused(), []);
    assert.deepEqual(reports.filter((r) => r.guarded).map((r) => r.guarded), [{ vm: name, policy: 'confirm', leaseMs: 3_000 }]);
  });

  it('failed over: takes the lease back and fences the source, once', async () => {
    startGuard();
    await until('leased', async () => (await leases.until(name)) !== undefined);
    setRole(receiver.state.db, name, 'failed-over', { failover: 'fo-test' });
    await until('fenced', () => reports.some((r) => r.fenced));
    assert.equal(await leases.until(name), undefined);
    const info = await adapter.getVm(name);
    assert.deepEqual({ state: info.powerState, role: info.labels.role, failover: info.labels.failover, autostart: info.autostart }, { state: 'shutoff', role: 'fenced', failover: 'fo-test', autostart: false });
    await sleep(2_500);
    assert.deepEqual(reports.filter((r) => r.revoked || r.fenced).map((r) => (r.revoked ? 'revoked' : 'fenced')), ['revoked', 'fenced']);
    // Given back as a failback would, for the next cases.
    setRole(receiver.state.db, name, 'replicating');
    const { unfenceSource } = await import('../../../plugin/sites/fence.js');
    await unfenceSource(adapter, name);
  });

  it('the DR site unreachable: one alert, no lease renewed', async () => {
    const leaseBefore = (await leases.until(name))?.getTime();
    await receiver.app.close();
    startGuard();
    await sleep(5_000);
    const alerts = reports.filter((r) => r.failed);
    assert.equal(alerts.length, 1, JSON.stringify(reports));
    assert.equal(alerts[0]!.failed!.what, 'ask-dr');
    assert.equal((await leases.until(name))?.getTime(), leaseBefore);
  });

  it('a protection whose watch became notify: its source loses the label, and its lease', async () => {
    assert.equal((await adapter.getVm(name)).labels['source-of'], name);
    await leases.grant(name, new Date(Date.now() + 60_000));
    startGuard('notify');
    await until('label gone', async () => (await adapter.getVm(name)).labels['source-of'] === undefined);
    assert.equal(await leases.until(name), undefined);
    assert.equal(await readFile(join(dir, 'leases', name), 'utf8').catch(() => 'none'), 'none');
  });
});
