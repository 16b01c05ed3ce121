/**
 * The source site's guard (plugin/sites/source-guard.ts) on the namespaced two-site lab, its
 * `vmdr serve` run with --no-replicate (no replication loop to lean on), the DR site watching
 * with policy automatic every 1 s, missed 3:
 *
 * - libvirtd alone stopped on the source site (its vmdr and the VM's QEMU still run): the DR site
 *   fails over with fenced: false; libvirtd started again → the source is fenced within seconds
 *   and `virsh start` of it is refused by the hook.
 * - a source VM with autostart on: its host back after a power cut while the DR site does not
 *   answer → the autostart is refused, the VM stays off, until the DR site answers "not failed
 *   over": then the daemon starts it. Its host back after an automatic failover → it never runs,
 *   and is fenced.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter, PowerState } from '../../hypervisors/types.js';
import { destroyLabVm, type LabVm } from '../helpers/lab.js';
import { eventually } from '../helpers/receiver-lab.js';
import { protectAcrossSites, undoTwoSiteTest, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';
import { waitForWatchLine, watchLines } from '../helpers/watch-lines.js';

const WATCH = 'watch: { policy: automatic, interval: 1s, missed: 3 }';

/** One protected VM across the two sites, both daemons running (the source's with --no-replicate), its first point shipped. */
function twoSiteSetUp(prefix: string, options: { autostart?: boolean } = {}) {
  const t = {
    lab: undefined as unknown as TwoSites,
    vm: undefined as unknown as LabVm,
    dr: undefined as unknown as HypervisorAdapter,
    configs: undefined as unknown as TwoSiteConfigs,
    drServe: undefined as ServeProcess | undefined,
    sourceServe: undefined as ServeProcess | undefined,
    drNetwork: `test-${prefix}n-${process.pid.toString(36)}`,
    target: () => `${t.vm.name}-dr`,
    onDr: (...args: string[]) => t.lab.dr.vmdr(args, { config: t.configs.dr }),
    onSource: (...args: string[]) => t.lab.source.vmdr(args, { config: t.configs.source }),
    serveSource: async () => (t.sourceServe = await t.lab.source.serve(t.configs.source, { args: ['--no-replicate'] })),
    /** The site back with its libvirtd, the test's adapter on it again. */
    reconnect: async () => {
      t.vm.adapter = openAdapter(t.lab.source.uri);
      await t.vm.adapter.connect();
    },
  };
  before(async () => {
    ({ lab: t.lab, vm: t.vm, dr: t.dr, configs: t.configs } = await protectAcrossSites(prefix, { drNetwork: t.drNetwork, settings: [WATCH] }));
    if (options.autostart) await t.vm.adapter.setAutostart(t.vm.name, true);
    t.drServe = await t.lab.dr.serve(t.configs.dr);
    await t.serveSource();
    const provision = await t.onDr('target', 'provision');
    assert.equal(provision.code, 0, provision.stderr);
    const sync = await t.onSource('sync', t.vm.name);
    assert.equal(sync.code, 0, sync.stderr);
  });
  after(async () => {
    await Promise.allSettled([t.drServe?.stop(), t.sourceServe?.stop()]);
    await undoTwoSiteTest({ lab: t.lab, vm: t.vm, dr: t.dr, target: t.target, network: t.drNetwork });
    await destroyLabVm(t.vm);
  });
  return t;
}

function eventsOf(serve: ServeProcess, name: string, from = 0): Record<string, unknown>[] {
  return serve.events.slice(from).filter((e) => e.event === name);
}

async function waitForEvent(serve: ServeProcess, name: string, from: number, timeoutMs: number): Promise<Record<string, unknown>> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(20)) {
    const e = eventsOf(serve, name, from)[0];
    if (e) return e;
    assert.ok(Date.now() < deadline, `no ${name} within ${timeoutMs} ms: ${JSON.stringify(serve.events.slice(from))}`);
  }
}

/** The automatic failover the DR site's watch ran with the source unfenced: its run id, checked in its signed report. */
async function failedOverUnfenced(t: ReturnType<typeof twoSiteSetUp>, from: number): Promise<string> {
  const done = await waitForWatchLine(t.drServe!, from, 'failed-over', 300_000);
  assert.match(done.detail!, /^automatic failover fo-\S+ succeeded/);
  const lines = watchLines(t.drServe!, from);
  const unfenced = lines.find((l) => l.state === 'failing-over' && l.detail?.startsWith('source could not be fenced (fenced: false)'));
  assert.ok(unfenced, JSON.stringify(lines));
  const run = /^automatic failover (fo-\S+) started$/.exec(lines.find((l) => l.state === 'failing-over')!.detail!)![1]!;
  const report = await t.onDr('report', 'show', run, '--json');
  assert.equal(report.code, 0, report.stderr);
  const vms = (JSON.parse(report.stdout) as { report: { vms: { sourceNotFenced: string | null }[] } }).report.vms;
  assert.equal(vms.length, 1);
  assert.ok(vms[0]!.sourceNotFenced, `the report says the source was fenced: ${report.stdout}`);
  assert.equal((await t.dr.getVm(t.target())).powerState, 'running');
  return run;
}

/** `virsh start` of the source on its own site: refused by the hook's line for a fenced source. */
async function startRefusedAsFenced(t: ReturnType<typeof twoSiteSetUp>, run: string): Promise<void> {
  const start = await t.lab.source.exec('virsh', ['start', t.vm.name]);
  assert.notEqual(start.code, 0);
  assert.ok(
    start.stderr.includes(`vmdr: VM ${t.vm.name} is the fenced source of protection ${t.vm.name}, failed over to its DR site (${run}); start it with "vmdr failback ${t.vm.name}"`),
    `virsh said: ${start.stderr}`,
  );
}

describe('the source guard on two sites (qemu:///system in namespaces)', function () {
  this.timeout(600_000);

  describe("the source site's libvirtd alone stopped", () => {
    const t = twoSiteSetUp('sgl');

    it('fails over with fenced: false; libvirtd back, the source is fenced within seconds and `virsh start` refused', async () => {
      await waitForWatchLine(t.drServe!, 0, 'healthy', 20_000);
      const from = t.drServe!.events.length;
      const fromSource = t.sourceServe!.events.length;
      const qemuRuns = () => t.lab.source.exec('bash', ['-c', `kill -0 "$(cat /run/libvirt/qemu/${t.vm.name}.pid)"`]);
      const stopped = await t.lab.source.exec('bash', ['-c', 'pid=$(cat /run/libvirtd.pid) && kill "$pid" && while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done']);
      assert.equal(stopped.code, 0, stopped.stderr);

      const run = await failedOverUnfenced(t, from);
      // libvirtd's end does not end its guests: the source still runs beside its DR twin.
      assert.equal((await qemuRuns()).code, 0, 'the source QEMU ended with libvirtd');
      // The guard knows, and says once that it cannot fence yet (not at every try, every 0.5 s).
      await waitForEvent(t.sourceServe!, 'fence-failed', fromSource, 10_000);
      await sleep(2_000);
      const alerts = eventsOf(t.sourceServe!, 'fence-failed', fromSource);
      assert.equal(alerts.length, 1, JSON.stringify(alerts));
      assert.equal(alerts[0]!.code, 'HYPERVISOR_UNREACHABLE');

      const started = await t.lab.source.exec('libvirtd', ['-d']);
      assert.equal(started.code, 0, started.stderr);
      const back = Date.now();
      const fenced = await waitForEvent(t.sourceServe!, 'source-fenced', fromSource, 10_000);
      const fencedInMs = Date.now() - back;
      console.log(`      libvirtd started again → source fenced in ${(fencedInMs / 1000).toFixed(1)} s`);
      assert.ok(fencedInMs < 5_000, `fenced ${fencedInMs} ms after libvirtd was started`);
      assert.deepEqual({ vm: fenced.vm, failover: fenced.failover, was: fenced.was }, { vm: t.vm.name, failover: run, was: 'running' });
      await t.reconnect();
      const info = await t.vm.adapter.getVm(t.vm.name);
      assert.deepEqual({ state: info.powerState, role: info.labels.role, autostart: info.autostart }, { state: 'shutoff', role: 'fenced', autostart: false });
      assert.notEqual((await qemuRuns()).code, 0);
      const domstate = await t.lab.source.exec('virsh', ['domstate', t.vm.name]);
      assert.equal(domstate.stdout.trim(), 'shut off');
      await startRefusedAsFenced(t, run);
    });
  });

  describe('a source VM with autostart on, its host back after a power cut', () => {
    const t = twoSiteSetUp('sga', { autostart: true });
    /** Every power state the source was seen in from outside its site, every 100 ms while `watching`. */
    const watchPower = () => {
      const seen = new Set<PowerState>();
      const adapter = openAdapter(t.lab.source.uri);
      let on = true;
      const done = (async () => {
        while (on) {
          const state = await adapter.powerState(t.vm.name).catch(() => undefined);
          if (state) seen.add(state);
          await sleep(100);
        }
        await adapter.close();
      })();
      return { seen, stop: async () => ((on = false), await done, seen) };
    };

    it('is labelled and leased while its DR site answers', async () => {
      const guarded = await waitForEvent(t.sourceServe!, 'start-guarded', 0, 10_000);
      assert.deepEqual({ vm: guarded.vm, policy: guarded.policy, leaseSeconds: guarded.leaseSeconds }, { vm: t.vm.name, policy: 'automatic', leaseSeconds: 3 });
      assert.equal((await t.vm.adapter.getVm(t.vm.name)).labels['source-of'], t.vm.name);
    });

    it('stays off while its DR site does not answer, and is started once it answers "not failed over"', async () => {
      // The DR site down for this part (its watch would otherwise fail the source over meanwhile).
      await t.drServe!.stop();
      t.drServe = undefined;
      await t.sourceServe!.stop();
      t.sourceServe = undefined;
      await t.lab.source.kill();
      const power = watchPower();
      await t.lab.source.up();
      // libvirtd tried its autostart and the hook refused it (its mark), before any vmdr ran here.
      await eventually(async () => assert.equal((await t.lab.source.exec('test', ['-e', `/run/vmdr/start-refused/${t.vm.name}`])).code, 0), 10_000);
      await t.serveSource();
      const alert = await waitForEvent(t.sourceServe!, 'source-guard-failed', 0, 10_000);
      assert.deepEqual({ what: alert.what, code: alert.code }, { what: 'ask-dr', code: 'PEER_UNREACHABLE' });
      const byHand = await t.lab.source.exec('virsh', ['start', t.vm.name]);
      assert.notEqual(byHand.code, 0);
      assert.ok(byHand.stderr.includes(`vmdr: VM ${t.vm.name} is the source of protection ${t.vm.name}, which its DR site may have failed over, and it holds no start lease:`), byHand.stderr);
      await sleep(3_000);
      assert.deepEqual([...power.seen], ['shutoff'], 'the source ran while its DR site did not answer');
      assert.equal(eventsOf(t.sourceServe!, 'source-guard-failed').length, 1, 'one alert, not one per try');

      t.drServe = await t.lab.dr.serve(t.configs.dr, { args: ['--no-replicate', '--no-watch'] });
      const started = await waitForEvent(t.sourceServe!, 'source-started', 0, 10_000);
      assert.equal(started.vm, t.vm.name);
      await power.stop();
      await t.reconnect();
      assert.equal(await t.vm.adapter.powerState(t.vm.name), 'running');
    });

    it('never runs after an automatic failover it missed: fenced when its daemon hears of it', async () => {
      await t.drServe!.stop();
      t.drServe = await t.lab.dr.serve(t.configs.dr);
      // Healthy as it was when its daemon stopped (no new event): a few beats, then the cut.
      await waitForEvent(t.drServe, 'watching', 0, 10_000);
      await sleep(2_000);
      assert.deepEqual(watchLines(t.drServe, 0), []);
      await t.sourceServe!.stop();
      t.sourceServe = undefined;
      await t.lab.source.kill();
      const run = await failedOverUnfenced(t, 0);

      const power = watchPower();
      await t.lab.source.up();
      await eventually(async () => assert.equal((await t.lab.source.exec('test', ['-e', `/run/vmdr/start-refused/${t.vm.name}`])).code, 0), 10_000);
      await t.serveSource();
      const fenced = await waitForEvent(t.sourceServe!, 'source-fenced', 0, 10_000);
      assert.deepEqual({ vm: fenced.vm, failover: fenced.failover, was: fenced.was }, { vm: t.vm.name, failover: run, was: 'shutoff' });
      assert.deepEqual([...(await power.stop())], ['shutoff'], 'the source ran beside its failed-over twin');
      await t.reconnect();
      const info = await t.vm.adapter.getVm(t.vm.name);
      assert.deepEqual({ state: info.powerState, role: info.labels.role, autostart: info.autostart }, { state: 'shutoff', role: 'fenced', autostart: false });
      assert.equal(eventsOf(t.sourceServe!, 'source-started').length, 0);
      await startRefusedAsFenced(t, run);
    });
  });
});
