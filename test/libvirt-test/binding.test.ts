/**
 * The binding of libvirt's C API (hypervisors/libvirt/api/) on its own: libvirt's real error
 * codes for the cases vmdr branches on, and calls that block a thread of the
 * pool while the process's own timers keep firing. Against the in-process test driver and, where
 * a daemon's answer matters, the lab's libvirtd.
 */
import assert from 'node:assert/strict';
import { VIR_DOMAIN_STATE, VIR_ERR, VIR_FROM } from '../../hypervisors/libvirt/api/codes.js';
import type { Handle } from '../../hypervisors/libvirt/api/native.js';
import { callPool, LibvirtCallFailed, LibvirtCallTimedOut } from '../../hypervisors/libvirt/api/pool.js';

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
    test = (await callPool.run('open', ['test:///default'], TIMEOUT)).conn;
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
