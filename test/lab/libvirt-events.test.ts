/**
 * libvirt's notices on this host's real libvirtd (qemu:///system), through vmdr's C shim: a
 * graceful stop of a booted lab guest returns as libvirt reports the VM stopped, not at its next
 * state poll; and a watched connection whose libvirtd restarts is reported closed, and the next
 * call, and the next event, come on a fresh one.
 *
 * Run under the lab lock (it restarts libvirtd); libvirtd runs again when the suite ends. The lab
 * guest has no ACPI daemon and ignores the power button, so the graceful stop waits until another
 * client pulls the plug once the stop has asked the guest: that moment is what is timed.
 */
import assert from 'node:assert/strict';
import { VIR_DOMAIN_EVENT, VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_XML } from '../../hypervisors/libvirt/api/codes.js';
import { libvirtEvents, type LifecycleEvent } from '../../hypervisors/libvirt/api/events.js';
import { callPool } from '../../hypervisors/libvirt/api/pool.js';
import { LibvirtConnection } from '../../hypervisors/libvirt/connection.js';
import { powerState, stopDomain } from '../../hypervisors/libvirt/power.js';
import { bootLabVm, createLabVm, destroyLabVm, type LabVm } from '../helpers/lab.js';
import { ensureLibvirtd, startLibvirtd, stopLibvirtd } from '../helpers/libvirtd.js';

const URI = 'qemu:///system';
/** The state poll a graceful stop keeps as its fallback runs every second: an event beats it by far. */
const RETURNS_WITHIN_MS = 300;

/** Resolves when the guest has been asked to stop over `conn`: the stop's own request, observed. */
function shutdownRequested(conn: LibvirtConnection): Promise<void> {
  const call = conn.call.bind(conn) as (...args: unknown[]) => Promise<unknown>;
  return new Promise((resolve) => {
    conn.call = (async (...args: unknown[]) => {
      const result = await call(...args);
      if (args[1] === 'shutdownDomain') resolve();
      return result;
    }) as typeof conn.call;
  });
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

describe('libvirt events on qemu:///system', function () {
  this.timeout(180_000);
  let vm: LabVm | undefined;

  before(async () => {
    await ensureLibvirtd();
    vm = await createLabVm('events', { marker: 'test-events' });
    await bootLabVm(vm);
  });

  after(async () => {
    await ensureLibvirtd();
    await destroyLabVm(vm);
  });

  it('a graceful stop returns as libvirt reports the VM stopped, within 300 ms of it going off', async () => {
    const conn = new LibvirtConnection(URI);
    const asked = shutdownRequested(conn);
    const stopped: (LifecycleEvent & { arrivedAt: number })[] = [];
    conn.onLifecycle((e) => {
      if (e.name === vm!.name && e.event === VIR_DOMAIN_EVENT.STOPPED) stopped.push({ ...e, arrivedAt: Date.now() });
    });
    try {
      assert.equal(await powerState(conn, vm!.name), 'running');
      const stop = stopDomain(conn, vm!.name, { mode: 'graceful', timeoutMs: 60_000 }).then(() => Date.now());
      await asked;
      // Another client pulls the plug: when its call returns, the VM is off.
      await vm!.adapter.stop(vm!.name, { mode: 'force' });
      const offAt = Date.now();
      const returnedAt = await within(stop, 5_000, 'the graceful stop');
      assert.ok(returnedAt - offAt < RETURNS_WITHIN_MS, `returned ${returnedAt - offAt} ms after the VM went off`);
      assert.equal(await powerState(conn, vm!.name), 'shutoff');
      assert.equal(stopped.length, 1);
      assert.equal(stopped[0]!.detail, VIR_DOMAIN_EVENT_STOPPED.DESTROYED);
      const { at, arrivedAt } = stopped[0]!;
      assert.ok(arrivedAt - at < RETURNS_WITHIN_MS, `from libvirt to the main thread: ${arrivedAt - at} ms`);
    } finally {
      await conn.close();
    }
  });

  it('reports a watched connection closed when libvirtd restarts; the next call and the next events come on a fresh one', async () => {
    const conn = new LibvirtConnection(URI);
    const defined: LifecycleEvent[] = [];
    let sayDefined: () => void = () => undefined;
    const definedAgain = new Promise<void>((resolve) => (sayDefined = resolve));
    conn.onLifecycle((e) => {
      if (e.name !== vm!.name || e.event !== VIR_DOMAIN_EVENT.DEFINED) return;
      defined.push(e);
      sayDefined();
    });
    // A watch of its own beside the connection's, to see the notice itself.
    const opened = await callPool.run('open', [URI], 30_000);
    assert.ok(opened.watch > 0, 'qemu:///system has events');
    const closed = new Promise<number>((resolve) => libvirtEvents.watch(opened.events, opened.watch, { lifecycle: () => undefined, closed: resolve }));
    try {
      const xml = await conn.call({ operation: 'read VM definition', vm: vm!.name }, 'domainXml', vm!.name, VIR_DOMAIN_XML.INACTIVE);
      await stopLibvirtd('SIGTERM');
      const goneAt = Date.now();
      const closedReason = await within(closed, 5_000, 'the closed notice');
      // EOF from libvirtd (1), or an I/O error (0) when the socket was reset.
      assert.ok(closedReason === 0 || closedReason === 1, `close reason ${closedReason}`);
      assert.ok(Date.now() - goneAt < 5_000);
      await startLibvirtd();

      // Defining the VM again is a DEFINED (updated) event: heard on the connection opened afresh.
      await conn.call({ operation: 'redefine VM', vm: vm!.name }, 'defineDomain', xml);
      await within(definedAgain, 5_000, 'the DEFINED event on the fresh connection');
      assert.equal(defined[0]!.detail, 1 /* VIR_DOMAIN_EVENT_DEFINED_UPDATED */);
      assert.equal(await powerState(conn, vm!.name), 'shutoff');
    } finally {
      libvirtEvents.unwatch(opened.watch);
      await callPool.closeWhenUnused(opened.conn);
      await conn.close();
    }
  });
});
