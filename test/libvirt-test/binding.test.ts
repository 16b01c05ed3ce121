/**
 * The binding of libvirt's C API (hypervisors/libvirt/api/) on its own: libvirt's real error
 * codes for the cases vmdr branches on, calls that block a thread of the
 * pool while the process's own timers keep firing, and VM starts handed to the events shim's own
 * threads (their outcomes and errors through its pipe, no call thread held). Against the
 * in-process test driver and, where a daemon's answer matters, the lab's libvirtd (the VMs it
 * starts boot no OS, have no disk and no network).
 */
import assert from 'node:assert/strict';
import { VIR_DOMAIN_STATE, VIR_ERR, VIR_FROM } from '../../hypervisors/libvirt/api/codes.js';
import type { Handle } from '../../hypervisors/libvirt/api/native.js';
import { randomBytes } from 'node:crypto';
import { libvirtEvents } from '../../hypervisors/libvirt/api/events.js';
import { callPool, LibvirtCallFailed, LibvirtCallTimedOut } from '../../hypervisors/libvirt/api/pool.js';
import { LibvirtConnection } from '../../hypervisors/libvirt/connection.js';

const TIMEOUT = 30_000;

async function failure(call: Promise<unknown>): Promise<LibvirtCallFailed['detail']> {
  const err = await call.then(
    () => assert.fail('the call succeeded'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof LibvirtCallFailed, `expected a libvirt failure, got ${String(err)}`);
  return err.detail;
}

describe('libvirt C API binding', () => {
  let test: Handle;

  before(async () => {
    const opened = await callPool.run('open', ['test:///default'], TIMEOUT);
    test = opened.conn;
    // As LibvirtConnection does: the outcomes of starts handed to the shim come through its pipe.
    libvirtEvents.listen(opened.events);
  });

  after(async () => {
    await callPool.run('close', [test], TIMEOUT);
  });

  describe('error codes from virGetLastError, read on the thread that failed', () => {
    const cases: { name: string; run: () => Promise<unknown>; call: string; code: number }[] = [
      { name: 'a missing VM', run: () => callPool.run('domainState', [test, 'no-such-vm'], TIMEOUT), call: 'virDomainLookupByName', code: VIR_ERR.NO_DOMAIN },
      { name: 'a missing network', run: () => callPool.run('describeNetwork', [test, 'no-such-net'], TIMEOUT), call: 'virNetworkLookupByName', code: VIR_ERR.NO_NETWORK },
      { name: 'XML that does not parse', run: () => callPool.run('defineDomain', [test, '<domain'], TIMEOUT), call: 'virDomainDefineXML', code: VIR_ERR.XML_DETAIL },
      { name: 'a missing checkpoint', run: () => callPool.run('deleteCheckpoint', [test, 'test', 'vmdr-none', false], TIMEOUT), call: 'virDomainCheckpointLookupByName', code: VIR_ERR.NO_DOMAIN_CHECKPOINT },
    ];
    for (const c of cases) {
      it(`${c.name}: ${c.call} fails with code ${c.code}`, async () => {
        const detail = await failure(c.run());
        assert.equal(detail.call, c.call);
        assert.equal(detail.code, c.code, detail.message);
        assert.ok(detail.message.length > 0);
      });
    }

    it('a missing VM on the lab libvirtd: code 42 from the QEMU driver', async () => {
      const { conn } = await callPool.run('open', ['qemu:///system'], TIMEOUT);
      try {
        const detail = await failure(callPool.run('domainState', [conn, 'no-such-vm'], TIMEOUT));
        assert.deepEqual([detail.code, detail.domain], [VIR_ERR.NO_DOMAIN, VIR_FROM.QEMU]);
      } finally {
        await callPool.run('close', [conn], TIMEOUT);
      }
    });

    it('a URI with an unknown transport: invalid argument from the remote driver, naming the transports it knows', async () => {
      const detail = await failure(callPool.run('open', ['qemu+carrier-pigeon:///system'], TIMEOUT));
      assert.deepEqual([detail.call, detail.code, detail.domain], ['virConnectOpen', VIR_ERR.INVALID_ARG, VIR_FROM.REMOTE]);
      assert.match(detail.message, /tls\|unix\|ssh/);
    });

    it('libvirtd not running: the open fails at once with a system error, it does not hang', async () => {
      const started = Date.now();
      const detail = await failure(callPool.run('open', ['qemu+unix:///system?socket=/nonexistent/libvirt-sock'], TIMEOUT));
      assert.equal(detail.code, VIR_ERR.SYSTEM_ERROR, detail.message);
      assert.ok(Date.now() - started < 5_000);
    });

    it('parallel failing calls each get their own error', async () => {
      const calls = Array.from({ length: 12 }, (_, i) =>
        i % 2 === 0 ? callPool.run('domainState', [test, `missing-${i}`], TIMEOUT) : callPool.run('describeNetwork', [test, `missing-${i}`], TIMEOUT),
      );
      const details = await Promise.all(calls.map(failure));
      assert.deepEqual(
        details.map((d) => d.code),
        details.map((_, i) => (i % 2 === 0 ? VIR_ERR.NO_DOMAIN : VIR_ERR.NO_NETWORK)),
      );
    });
  });

  describe('VM starts on the events shim\'s threads', () => {
    const domainXml = (type: 'test' | 'qemu', name: string) =>
      type === 'test'
        ? `<domain type='test'><name>${name}</name><memory>8192</memory><os><type>hvm</type></os></domain>`
        : `<domain type='qemu'><name>${name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices><serial type='pty'/></devices></domain>`;

    async function withVms(conn: Handle, type: 'test' | 'qemu', count: number, body: (names: string[]) => Promise<void>): Promise<void> {
      const names = Array.from({ length: count }, (_, i) => `test-shim-start-${randomBytes(3).toString('hex')}-${i}`);
      try {
        for (const name of names) await callPool.run('defineDomain', [conn, domainXml(type, name)], TIMEOUT);
        await body(names);
      } finally {
        await Promise.all(
          names.map(async (name) => {
            await callPool.run('destroyDomain', [conn, name], TIMEOUT).catch(() => undefined);
            await callPool.run('undefineDomain', [conn, name, 0], TIMEOUT).catch(() => undefined);
          }),
        );
      }
    }

    it('a shut-off VM starts; a running one fails with libvirt\'s code read on the thread that started it; a missing one is not found', () =>
      withVms(test, 'test', 1, async ([name]) => {
        await callPool.run('startDomain', [test, name!], TIMEOUT);
        assert.equal(await callPool.run('domainState', [test, name!], TIMEOUT), VIR_DOMAIN_STATE.RUNNING);
        const again = await failure(callPool.run('startDomain', [test, name!], TIMEOUT));
        // The test driver's code for it (the QEMU driver's is OPERATION_INVALID).
        assert.deepEqual([again.call, again.code], ['virDomainCreate', VIR_ERR.INTERNAL_ERROR], again.message);
        assert.match(again.message, /already running/);
        const missing = await failure(callPool.run('startDomain', [test, 'no-such-vm'], TIMEOUT));
        assert.deepEqual([missing.call, missing.code], ['virDomainLookupByName', VIR_ERR.NO_DOMAIN]);
        const byUuid = await failure(callPool.run('startDomain', [test, '00000000-0000-4000-8000-00000000f00d'], TIMEOUT));
        assert.deepEqual([byUuid.call, byUuid.code], ['virDomainLookupByName', VIR_ERR.NO_DOMAIN]);
      }));

    it('starts in parallel each get their own outcome', () =>
      withVms(test, 'test', 6, async (names) => {
        const outcomes = await Promise.all(
          [...names, ...names.slice(0, 3).map((n) => `${n}-missing`)].map((name) =>
            callPool.run('startDomain', [test, name], TIMEOUT).then(
              () => 'started',
              (e: unknown) => (e instanceof LibvirtCallFailed ? e.detail.code : String(e)),
            ),
          ),
        );
        assert.deepEqual(outcomes, [...names.map(() => 'started'), VIR_ERR.NO_DOMAIN, VIR_ERR.NO_DOMAIN, VIR_ERR.NO_DOMAIN]);
      }));

    it('six VMs of the lab libvirtd started at once on one connection all run, hold no call thread while QEMU launches, and hold no other call of the connection back (libvirtd serves 5 calls of a connection at once)', async () => {
      const connection = new LibvirtConnection('qemu:///system');
      const { conn } = await callPool.run('open', ['qemu:///system'], TIMEOUT);
      try {
        await withVms(conn, 'qemu', 6, async (names) => {
          const threads = callPool.threadCount;
          const t0 = Date.now();
          const starts = names.map((name) => connection.start({ operation: 'start VM', vm: name }, name).then(() => Date.now() - t0));
          // Asked once the six starts are in libvirtd's hands.
          await new Promise((r) => setTimeout(r, 100));
          const read = await connection.call({ operation: 'read state', vm: names[0] }, 'domainState', names[0]!).then(() => Date.now() - t0);
          const done = await Promise.all(starts);
          assert.ok(read < Math.min(...done), `the read answered at ${read} ms, after the first start ended (${done.join(', ')} ms): it waited behind the starts`);
          assert.deepEqual(await Promise.all(names.map((name) => callPool.run('domainState', [conn, name], TIMEOUT))), names.map(() => VIR_DOMAIN_STATE.RUNNING));
          // Each start takes libvirtd hundreds of ms: held on call threads, the pool would have grown to six.
          assert.ok(callPool.threadCount <= Math.max(threads, 2), `${callPool.threadCount} call threads after the starts (${threads} before)`);
        });
      } finally {
        await connection.close();
        await callPool.run('close', [conn], TIMEOUT);
      }
    });
  });

  it('a call that blocks its thread leaves the event loop free: timers keep firing', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 50);
    try {
      await callPool.run('sleepForTest', [600], TIMEOUT);
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks >= 8, `only ${ticks} ticks of 50 ms during a 600 ms call`);
  });

  it('a call that never returns times out naming the procedure, and the pool goes on', async () => {
    const err = await callPool.run('sleepForTest', [2_000], 200).then(
      () => assert.fail('no timeout'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof LibvirtCallTimedOut);
    assert.match(err.message, /sleepForTest within 0.2 s/);
    assert.equal(await callPool.run('domainState', [test, 'test'], TIMEOUT), VIR_DOMAIN_STATE.RUNNING);
  });
});
