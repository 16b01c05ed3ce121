import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { ensureLabGuest, GUEST_READY, labBoot, labScratchDir, makeDisk, parseGuestFields, waitForSerialLine } from '../helpers/lab.js';

describe('the lab guest', function () {
  this.timeout(120_000);
  const name = `test-writer-${randomBytes(3).toString('hex')}`;
  const network = `test-net-${name.slice(-6)}`;
  let adapter: HypervisorAdapter;
  let dir: string;

  before(async () => {
    await ensureLabGuest();
    dir = await labScratchDir('guest');
    adapter = openAdapter('qemu:///system');
    await adapter.connect();
    await adapter.ensureIsolatedNetwork({ name: network });
  });

  after(async () => {
    await adapter.stop(name, { mode: 'force' }).catch(() => undefined);
    await adapter.undefine(name).catch(() => undefined);
    await adapter.removeNetwork(network).catch(() => undefined);
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('in writer mode keeps writing to its disk after saying it is ready', async () => {
    const disk = join(dir, 'vda.qcow2');
    await makeDisk(disk, 'writer-disk');
    const log = join(dir, 'console.log');
    await adapter.defineVm({
      name,
      memoryMiB: 256,
      vcpus: 1,
      boot: labBoot('console=ttyS0 quiet vmdr.mode=writer vmdr.write_kbps=256'),
      disks: [{ path: disk, format: 'qcow2', target: 'vda' }],
      nics: [{ network }],
      serialLog: log,
    });
    await adapter.start(name);
    const ready = parseGuestFields((await waitForSerialLine({ vm: name, file: log, pattern: GUEST_READY, timeoutMs: 60_000 }))[1]!);
    assert.equal(ready.marker, 'writer-disk');
    assert.equal(ready.seed, 'no');
    const wrote = /^VMDR-GUEST wrote bytes=(\d+)$/;
    const first = Number((await waitForSerialLine({ vm: name, file: log, pattern: wrote, timeoutMs: 30_000 }))[1]);
    const later = async () => {
      const text = (await import('node:fs/promises')).readFile(log, 'utf8');
      return Math.max(...[...(await text).matchAll(/wrote bytes=(\d+)/g)].map((m) => Number(m[1])));
    };
    const deadline = Date.now() + 30_000;
    let last = first;
    while (last <= first && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      last = await later();
    }
    assert.ok(last > first, `the guest reported ${first} bytes written and then no more`);
  });
});
