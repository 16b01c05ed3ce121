/**
 * libvirt's notices through vmdr's C shim (hypervisors/libvirt/api/shim/), on the in-process test
 * driver: each VM's lifecycle events arrive on the main thread in order, with libvirt's event and
 * detail codes and the VM's UUID, on the connection they belong to and on no other; a connection
 * closed raises nothing after it; and a storm of VM changes, with connections opened and closed
 * under it and every call thread busy, does not crash the process (VMDR_EVENTS_STRESS=N runs N
 * VMs per lane instead of 50, for a longer hunt). test:///default's VMs are shared by every
 * connection of the process, so each VM gets a unique test-… name.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIR_DOMAIN_EVENT as E, VIR_DOMAIN_EVENT_STOPPED } from '../../hypervisors/libvirt/api/codes.js';
import type { LifecycleEvent } from '../../hypervisors/libvirt/api/events.js';
import { callPool } from '../../hypervisors/libvirt/api/pool.js';
import { LibvirtConnection } from '../../hypervisors/libvirt/connection.js';

const URI = 'test:///default';
const WAIT_MS = 10_000;

const domainXml = (name: string) => `<domain type='test'><name>${name}</name><memory>65536</memory><os><type>hvm</type></os></domain>`;
const uniqueName = (what: string) => `test-events-${what}-${randomBytes(3).toString('hex')}`;

/** Every lifecycle event a connection reports, and a way to wait for one. */
class Recorder {
  readonly events: LifecycleEvent[] = [];
  private readonly waiters = new Set<() => void>();
  readonly stop: () => void;

  constructor(conn: LibvirtConnection) {
    this.stop = conn.onLifecycle((event) => {
      this.events.push(event);
      for (const check of [...this.waiters]) check();
    });
  }

  of(name: string): [number, number][] {
    return this.events.filter((e) => e.name === name).map((e) => [e.event, e.detail]);
  }

  /** Resolves once `count` events of VM `name` have arrived. */
  until(name: string, count: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.of(name).length < count) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${count} events of ${name} did not arrive within ${WAIT_MS} ms: ${JSON.stringify(this.of(name))}`));
      }, WAIT_MS);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }
}

/** define, start, destroy, undefine: four events. */
async function cycle(conn: LibvirtConnection, name: string): Promise<string> {
  const uuid = await conn.call({ operation: 'define', vm: name }, 'defineDomain', domainXml(name));
  await conn.call({ operation: 'start', vm: name }, 'startDomain', name);
  await conn.call({ operation: 'destroy', vm: name }, 'destroyDomain', name);
  await conn.call({ operation: 'undefine', vm: name }, 'undefineDomain', name, 0);
  return uuid;
}
const CYCLE_EVENTS: [number, number][] = [
  [E.DEFINED, 0 /* ADDED */],
  [E.STARTED, 0 /* BOOTED */],
  [E.STOPPED, VIR_DOMAIN_EVENT_STOPPED.DESTROYED],
  [E.UNDEFINED, 0 /* REMOVED */],
];

describe('libvirt lifecycle events on the test driver', function () {
  this.timeout(60_000);
  const opened: LibvirtConnection[] = [];
  let dir: string;

  const connect = (uri = URI) => {
    const conn = new LibvirtConnection(uri);
    opened.push(conn);
    return conn;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-events-'));
  });

  after(async () => {
    await Promise.all(opened.map((c) => c.close()));
    await rm(dir, { recursive: true, force: true });
  });

  it('reports a VM defined, started, shut down, started, destroyed and undefined, in order, with its UUID', async () => {
    const conn = connect();
    const seen = new Recorder(conn);
    const name = uniqueName('order');
    const uuid = await conn.call({ operation: 'define', vm: name }, 'defineDomain', domainXml(name));
    await conn.call({ operation: 'start', vm: name }, 'startDomain', name);
    await conn.call({ operation: 'shut down', vm: name }, 'shutdownDomain', name);
    await conn.call({ operation: 'start', vm: name }, 'startDomain', uuid);
    await conn.call({ operation: 'destroy', vm: name }, 'destroyDomain', name);
    await conn.call({ operation: 'undefine', vm: name }, 'undefineDomain', name, 0);
    await seen.until(name, 6);
    seen.stop();
    assert.deepEqual(seen.of(name), [
      [E.DEFINED, 0],
      [E.STARTED, 0],
      [E.STOPPED, VIR_DOMAIN_EVENT_STOPPED.SHUTDOWN],
      [E.STARTED, 0],
      [E.STOPPED, VIR_DOMAIN_EVENT_STOPPED.DESTROYED],
      [E.UNDEFINED, 0],
    ]);
    assert.ok(seen.events.filter((e) => e.name === name).every((e) => e.uuid === uuid));
    const times = seen.events.map((e) => e.at);
    assert.deepEqual(times, [...times].sort((a, b) => a - b), 'in the order libvirt reported them');
    assert.ok(Math.abs(times[0]! - Date.now()) < 5_000, `reported at ${new Date(times[0]!).toISOString()}`);
  });

  it('tells events of two connections apart: each hears only its own host', async () => {
    // A test driver of its own (a file), beside the process's shared test:///default.
    const file = join(dir, 'other-host.xml');
    await writeFile(file, '<node/>');
    const shared = connect();
    const sharedAgain = connect();
    const other = connect(`test://${file}`);
    const [onShared, onSharedAgain, onOther] = [new Recorder(shared), new Recorder(sharedAgain), new Recorder(other)];
    await Promise.all([shared, sharedAgain, other].map((c) => c.open()));

    const there = uniqueName('other');
    const otherUuid = await cycle(other, there);
    await onOther.until(there, 4);
    // Events come through one pipe in the order libvirt reported them: once an event of the
    // shared host made after those arrived, any of the other host's that went astray would be here.
    const here = uniqueName('shared');
    const uuid = await cycle(shared, here);
    await Promise.all([onShared.until(here, 4), onSharedAgain.until(here, 4)]);

    assert.deepEqual(onOther.of(there), CYCLE_EVENTS);
    assert.ok(onOther.events.every((e) => e.uuid === otherUuid), 'the other host hears only its VM');
    for (const seen of [onShared, onSharedAgain]) {
      assert.deepEqual(seen.of(here), CYCLE_EVENTS);
      assert.ok(seen.events.every((e) => e.uuid !== otherUuid), 'the shared host never hears the other one');
      assert.ok(seen.events.filter((e) => e.name === here).every((e) => e.uuid === uuid));
    }
  });

  it('raises nothing on a connection after it is closed, while the host keeps changing', async () => {
    const closing = connect();
    const staying = connect();
    const onClosing = new Recorder(closing);
    const onStaying = new Recorder(staying);
    const earlier = uniqueName('earlier');
    await cycle(closing, earlier);
    await onClosing.until(earlier, 4);
    await closing.close();

    const later = uniqueName('later');
    await cycle(staying, later);
    await onStaying.until(later, 4);
    assert.deepEqual(onClosing.of(later), []);
    assert.deepEqual(onClosing.of(earlier), CYCLE_EVENTS);
  });

  it('survives 200 VMs made and removed with every call thread busy and connections opened and closed under them (stress)', async function () {
    const started = Date.now();
    const LANES = 4;
    const PER_LANE = Number(process.env.VMDR_EVENTS_STRESS ?? 50);
    const shared = connect();
    const seen = new Recorder(shared);
    await shared.open();
    let stop = false;
    // Keeps the pool at more than four threads: calls that block theirs while the lanes run.
    const busy = Array.from({ length: 2 }, async () => {
      while (!stop) await callPool.run('sleepForTest', [30], WAIT_MS);
    });
    const names: string[][] = [];
    const lanes = Array.from({ length: LANES }, async (_, lane) => {
      names[lane] = [];
      for (let i = 0; i < PER_LANE; i++) {
        const name = uniqueName(`stress-${lane}-${i}`);
        names[lane]!.push(name);
        await cycle(shared, name);
        if (i % 5 === lane % 5) {
          // A connection that hears the others' events as it opens and closes.
          const passing = new LibvirtConnection(URI);
          passing.onLifecycle(() => undefined);
          await passing.call({ operation: 'read capabilities' }, 'capabilities');
          await passing.close();
        }
      }
    });
    try {
      await Promise.all(lanes);
    } finally {
      stop = true;
      await Promise.all(busy);
    }
    for (const lane of names) for (const name of lane) await seen.until(name, 4);
    for (const lane of names) for (const name of lane) assert.deepEqual(seen.of(name), CYCLE_EVENTS, name);
    assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
  });
});
