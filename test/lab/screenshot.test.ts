/**
 * Screenshots through the libvirt adapter on the real libvirtd and QEMU (qemu:///system): a
 * running lab guest's screen is a PNG of the VGA text screen (720x400) that is not one colour; a
 * VM without a video device fails with NO_DISPLAY, one that is off with INVALID_POWER_STATE, one
 * that does not exist with VM_NOT_FOUND. No graphics listener is opened for it: QEMU runs with
 * `-display none` (no VNC or SPICE port on any address).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PNG } from 'pngjs';
import { rejectsWith } from '../helpers/assertions.js';
import { bootLabVm, createLabVm, destroyLabVm, labBoot, type LabVm } from '../helpers/lab.js';

const exec = promisify(execFile);
/** vmdr's default domain without its video device. */
const HEADLESS = `<domain type='qemu'><name>{{name}}</name><memory unit='MiB'>{{memoryMiB}}</memory><vcpu>{{vcpus}}</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features><on_poweroff>destroy</on_poweroff>
<devices><memballoon model='none'/></devices></domain>`;

describe('screenshots of lab guests (qemu:///system)', function () {
  this.timeout(300_000);
  let vm: LabVm;
  const headless = () => `${vm.name}-headless`;

  before(async () => {
    vm = await createLabVm('screenshot', { marker: 'screenshot' });
  });

  after(async () => {
    if (vm) {
      await vm.adapter.stop(headless(), { mode: 'force' }).catch(() => undefined);
      await vm.adapter.undefine(headless()).catch(() => undefined);
    }
    await destroyLabVm(vm);
  });

  it('a VM that is off: INVALID_POWER_STATE', async () => {
    const err = await rejectsWith(vm.adapter.screenshot(vm.name), 'INVALID_POWER_STATE');
    assert.equal(err.subject.vm, vm.name);
  });

  it("a running lab guest: a PNG of its text screen, not one colour, and QEMU opened no display listener", async () => {
    await bootLabVm(vm);
    const started = Date.now();
    const shot = await vm.adapter.screenshot(vm.name);
    const took = Date.now() - started;
    const png = PNG.sync.read(shot.png);
    assert.deepEqual([png.width, png.height], [720, 400], 'VGA text mode');
    assert.deepEqual([shot.width, shot.height], [720, 400]);
    const colours = new Set<number>();
    for (let i = 0; i < png.data.length && colours.size < 2; i += 4) colours.add(png.data.readUInt32BE(i));
    assert.equal(colours.size, 2, 'not one colour: the screen has text on it');
    assert.ok(took < 10_000, `took ${took} ms`);
    const { stdout } = await exec('virsh', ['-c', 'qemu:///system', 'domdisplay', vm.name]).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    assert.equal(stdout.trim(), '', 'no VNC or SPICE listener');
  });

  it('a VM without a video device: NO_DISPLAY, naming the VM and the host', async () => {
    const template = join(vm.dir, 'headless.xml');
    await writeFile(template, HEADLESS);
    await vm.adapter.defineVm({ name: headless(), memoryMiB: 256, vcpus: 1, boot: labBoot(), disks: [], nics: [], template });
    await vm.adapter.start(headless());
    const err = await rejectsWith(vm.adapter.screenshot(headless()), 'NO_DISPLAY');
    assert.deepEqual([err.subject.vm, err.subject.host], [headless(), 'qemu:///system']);
    assert.match(err.message, /has no display to take a screenshot of$/);
  });

  it('a VM that does not exist: VM_NOT_FOUND', async () => {
    await rejectsWith(vm.adapter.screenshot('test-no-such-vm-screenshot'), 'VM_NOT_FOUND');
  });
});
