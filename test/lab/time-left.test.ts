/**
 * The time left a cycle's progress shows, on a real initial sync of a mostly empty disk: the lab
 * guest on a 2 GiB disk (a few MiB of file system) with 32 MiB written by QEMU, shipped under an
 * 8 MiB/s limit with compression off, so the data takes about 4 s and the 2 GiB of zero ranges
 * nothing. The first time left the terminal would show (scripts/cli/progress.ts's PaceMeter, fed
 * the `--json` lines as they came) must be within 1.5× of the time the bytes then took; counted as
 * bytes to ship, the zero ranges made it 2 GiB / 8 MiB/s, over four minutes.
 */
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import type { Progress } from '../../hypervisors/types.js';
import { PaceMeter } from '../../scripts/cli/progress.js';
import { bootLabVm, createLabVm, spawnVmdr, writeOneHostConfig, type LabVm } from '../helpers/lab.js';
import { hmpWrite } from '../helpers/patterns.js';
import { destroyProtectedLabVm, labProtection } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const MiB = 1024 * 1024;
const LIMIT = 8 * MiB;

describe('the time left of an initial sync of a mostly empty disk (qemu:///system)', function () {
  this.timeout(180_000);
  let vm: LabVm;
  let drNetwork: string;
  let config: string;
  let serve: ServeProcess | undefined;

  before(async () => {
    vm = await createLabVm('timeleft', { marker: 'timeleft-src', diskSize: '2G' });
    drNetwork = `test-dr-${vm.name.slice(-6)}`;
    await vm.adapter.ensureIsolatedNetwork({ name: drNetwork });
    await bootLabVm(vm);
    // Written through QEMU's block layer, past the guest's own blocks: data the cycle must read and send.
    await hmpWrite(vm.name, 0, '0x5a', 1024 * MiB, 32 * MiB);
    config = await writeOneHostConfig(vm, labProtection(vm, { network: drNetwork, settings: ['bandwidth: 8MiB/s', 'compression: off'] }));
    serve = await startServe(config);
  });

  after(async () => {
    await serve?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
  });

  it('counts the data only: the first time left shown is within 1.5× of the time the bytes took', async () => {
    const run = spawnVmdr(['protect', vm.name, '--json', '--config', config]);
    const ship: (Progress & { at: number })[] = [];
    createInterface({ input: run.process.stdout! }).on('line', (line) => {
      const e = JSON.parse(line) as Progress & { event?: string };
      if (e.event === 'progress' && e.phase === 'ship') ship.push({ ...e, at: Date.now() });
    });
    const r = await run.done;
    assert.equal(r.code, 0, r.stderr);
    const last = ship.at(-1)!;
    assert.ok(last.zeroes && last.zeroes.total > 1900 * MiB, `the zero ranges are said apart: ${JSON.stringify(last)}`);
    assert.ok(last.total - last.zeroes.total >= 32 * MiB && last.total - last.zeroes.total < 128 * MiB, `the data: ${last.total - last.zeroes.total} bytes`);
    // The bytes ended at the first event with all of them done (the commit comes after).
    const ended = ship.find((p) => p.done >= p.total)!.at;
    let clock = 0;
    const meter = new PaceMeter(() => clock);
    const first = ship.map((p) => ((clock = p.at), { p, pace: meter.pace(p) })).find((x) => x.pace.etaSeconds !== undefined && x.p.done < x.p.total);
    assert.ok(first, 'a time left was shown while the cycle shipped');
    const took = (ended - first.p.at) / 1000;
    const shown = first.pace.etaSeconds!;
    const counted = (first.p.total - first.p.done) / LIMIT;
    console.log(`      time left shown ${shown.toFixed(1)} s, taken ${took.toFixed(1)} s (zeroes counted as bytes: ${counted.toFixed(0)} s)`);
    assert.ok(shown <= 1.5 * took && shown >= took / 1.5, `time left shown ${shown.toFixed(1)} s, the bytes took ${took.toFixed(1)} s`);
  });
});
