import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { createLabVm, destroyLabVm, GUEST_READY, LAB_CMDLINE, parseGuestFields, waitForSerialLine, type LabVm } from '../helpers/lab.js';

describe('the lab guest', function () {
  this.timeout(120_000);
  let vm: LabVm | undefined;
  after(() => destroyLabVm(vm));

  it('in writer mode keeps writing to its disk after saying it is ready', async () => {
    vm = await createLabVm('writer', { marker: 'writer-disk', cmdline: `${LAB_CMDLINE} vmdr.mode=writer vmdr.write_kbps=256` });
    await vm.adapter.start(vm.name);
    const ready = parseGuestFields((await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: GUEST_READY, timeoutMs: 60_000 }))[1]!);
    assert.equal(ready.marker, 'writer-disk');
    assert.equal(ready.seed, 'no');
    const wrote = /^VMDR-GUEST wrote bytes=(\d+)$/;
    const first = Number((await waitForSerialLine({ vm: vm.name, file: vm.log, pattern: wrote, timeoutMs: 30_000 }))[1]);
    const latest = async () => Math.max(...[...(await readFile(vm!.log, 'utf8')).matchAll(/wrote bytes=(\d+)/g)].map((m) => Number(m[1])));
    const deadline = Date.now() + 30_000;
    let last = first;
    while (last <= first && Date.now() < deadline) {
      await delay(500);
      last = await latest();
    }
    assert.ok(last > first, `the guest reported ${first} bytes written and then no more`);
  });
});
