/**
 * The binding against a libvirtd that freezes (SIGSTOP) and thaws again and again while calls of
 * several kinds run on several connections: calls given up on and answering late, connections
 * forgotten and opened again, adapters closed and opened again mid-freeze, calls on the test
 * driver (in this process) beside them. The process must not crash, every call must end
 * (answered, or one of the errors a user is told about), and every connection answers once
 * libvirtd does. With libvirt's keepalive on, this crashed the process within 90 s, 4 runs in 4
 * (docs/libvirt.md, "A frozen libvirtd").
 *
 * In the suite it runs for 20 s; `npm run test:libvirtd-freeze` runs it for minutes
 * (VMDR_FREEZE_SECONDS). Run under the lab lock (it freezes this host's libvirtd).
 */
import assert from 'node:assert/strict';
import { openAdapter } from '../../hypervisors/index.js';
import { MAX_GIVEN_UP_PER_HOST } from '../../hypervisors/libvirt/api/pool.js';
import { VmdrError, type HypervisorAdapter } from '../../hypervisors/types.js';
import { rejectsWith } from '../helpers/assertions.js';
import { ensureLibvirtd, isStopped, libvirtdPid } from '../helpers/libvirtd.js';

const URI = 'qemu:///system';
const SECONDS = Number(process.env.VMDR_FREEZE_SECONDS ?? 20);
const CALL_TIMEOUT_MS = 1_000;
/** The errors a call to a frozen (or just thawed) libvirtd may end with. */
const EXPECTED = new Set(['HYPERVISOR_TIMED_OUT', 'HYPERVISOR_UNREACHABLE', 'VM_NOT_FOUND', 'NETWORK_NOT_FOUND']);
/** Freezes short of a call's timeout, past it, and long (libvirt's keepalive, when on, gave up after about 20 s). */
const FREEZES_MS = [200, 1_500, 4_000, 9_000, 21_000];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;

describe('libvirtd frozen and thawed again and again (stress)', function () {
  this.timeout((SECONDS + 180) * 1000);
  let pid: number;

  before(async () => {
    await ensureLibvirtd();
    pid = (await libvirtdPid())!;
    assert.ok(pid, 'libvirtd is running');
  });

  after(async () => {
    if (pid && (await isStopped(pid))) process.kill(pid, 'SIGCONT');
    await ensureLibvirtd();
  });

  it(`calls of every kind on several connections end, typed, and work again after each thaw (${SECONDS} s)`, async () => {
    const adapters: HypervisorAdapter[] = [0, 1, 2].map(() => openAdapter(URI, { callTimeoutMs: CALL_TIMEOUT_MS }));
    const local = openAdapter('test:///default');
    const unexpected: string[] = [];
    let calls = 0;
    let stopping = false;

    const ops: ((a: HypervisorAdapter) => Promise<unknown>)[] = [
      (a) => a.listVms(),
      (a) => a.getVm('test-vmdr-freeze-missing'),
      (a) => a.powerState('test-vmdr-freeze-missing'),
      (a) => a.listNetworks(),
      (a) => a.changeTracker!.checkpointNames('test-vmdr-freeze-missing'),
    ];
    const caller = async () => {
      while (!stopping) {
        const i = Math.floor(Math.random() * (adapters.length + 1));
        const adapter = i === adapters.length ? local : adapters[i]!;
        calls++;
        const failed = await pick(ops)(adapter).then(
          () => false,
          (err: unknown) => {
            if (!(err instanceof VmdrError && EXPECTED.has(err.code))) unexpected.push(String(err));
            return true;
          },
        );
        // A frozen host's calls fail at once once it holds enough given-up calls: no busy loop.
        if (failed) await sleep(20);
        // A connection closed and opened again while others' calls are inside libvirt.
        if (Math.random() < 0.02 && i < adapters.length) {
          adapters[i] = openAdapter(URI, { callTimeoutMs: CALL_TIMEOUT_MS });
          void adapter.close().catch((err: unknown) => unexpected.push(`close: ${String(err)}`));
        }
      }
    };
    const callers = Array.from({ length: 6 }, caller);

    let rounds = 0;
    try {
      const end = Date.now() + SECONDS * 1000;
      for (; Date.now() < end; rounds++) {
        await sleep(200 + Math.random() * 1_000);
        process.kill(pid, 'SIGSTOP');
        await sleep(Math.min(pick(FREEZES_MS), Math.max(200, end - Date.now())));
        process.kill(pid, 'SIGCONT');
        // Once libvirtd answers, every connection does again (a fresh one where keepalive gave up).
        // (libvirtd first works through the calls given up on; a call's 1 s includes a new thread's start.)
        const thawed = Date.now();
        for (const a of adapters) {
          for (;;) {
            const failure = await a.listVms().then(() => undefined, (err: unknown) => err);
            if (failure === undefined) break;
            assert.ok(Date.now() - thawed < 15_000, `every connection answers within 15 s of the thaw: ${String(failure)}`);
            await sleep(100);
          }
        }
      }
    } finally {
      stopping = true;
      if (await isStopped(pid)) process.kill(pid, 'SIGCONT');
      await Promise.all(callers);
      await Promise.all([...adapters, local].map((a) => a.close()));
    }
    console.log(`      ${rounds} freezes, ${calls} calls`);
    assert.deepEqual(unexpected, []);
  });

  it(`a frozen libvirtd holds at most ${MAX_GIVEN_UP_PER_HOST} calls given up on: the next fails at once, typed, naming the VM; all answer after the thaw`, async () => {
    const adapter = openAdapter(URI, { callTimeoutMs: CALL_TIMEOUT_MS });
    const vm = 'test-vmdr-freeze-missing';
    try {
      await adapter.connect();
      process.kill(pid, 'SIGSTOP');
      try {
        await Promise.all(Array.from({ length: MAX_GIVEN_UP_PER_HOST }, () => rejectsWith(adapter.powerState(vm), 'HYPERVISOR_TIMED_OUT')));
        const started = Date.now();
        const err = await rejectsWith(adapter.getVm(vm), 'HYPERVISOR_TIMED_OUT');
        const ms = Date.now() - started;
        assert.ok(ms < 500, `failed at once, not after ${ms} ms`);
        assert.equal(err.subject.vm, vm);
        assert.equal(err.subject.host, URI);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      // The calls given up on come back, and the host is sent calls again.
      const thawed = Date.now();
      while (!(await adapter.listVms().then(() => true, () => false))) {
        assert.ok(Date.now() - thawed < 15_000, 'answers within 15 s of the thaw');
        await sleep(100);
      }
    } finally {
      await adapter.close();
    }
  });
});
