/**
 * Screenshots through the adapter on libvirt's test driver (test:///default, in this process),
 * whose screenshot is a fixed PNG libvirt ships: it arrives over a libvirt stream as a PNG that
 * decodes; a VM without a display, a VM that is off and a VM that does not exist each fail with
 * their own code.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { openAdapter } from '../../hypervisors/index.js';
import { VmdrError, type HypervisorAdapter, type VmSpec } from '../../hypervisors/types.js';
import { rejectsWith } from '../helpers/assertions.js';

/** The default template's domain, less its video device. */
const HEADLESS = `<domain type='qemu'><name>{{name}}</name><memory unit='MiB'>{{memoryMiB}}</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices/></domain>`;

describe('screenshots on the test driver', () => {
  let adapter: HypervisorAdapter;
  let dir: string;
  const made: string[] = [];
  const spec = (overrides: Partial<VmSpec> = {}): VmSpec => {
    const name = `test-shot-${randomBytes(3).toString('hex')}`;
    made.push(name);
    return { name, memoryMiB: 64, vcpus: 1, boot: { kind: 'disk' }, disks: [{ path: join(dir, 'vda.qcow2'), format: 'qcow2' }], nics: [], ...overrides };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-screenshot-'));
    adapter = openAdapter('test:///default');
    await adapter.connect();
  });

  after(async () => {
    for (const name of made) {
      await adapter.stop(name, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(name).catch((err: unknown) => {
        if (!(err instanceof VmdrError && err.code === 'VM_NOT_FOUND')) throw err;
      });
    }
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a running VM defined by vmdr has a display: its screenshot is a PNG that decodes', async () => {
    const vm = spec();
    await adapter.defineVm(vm);
    await adapter.start(vm.name);
    const shot = await adapter.screenshot(vm.name);
    const decoded = PNG.sync.read(shot.png);
    assert.ok(shot.width > 0 && shot.height > 0);
    assert.deepEqual([decoded.width, decoded.height], [shot.width, shot.height]);
  });

  it('a VM without a video device: NO_DISPLAY, naming the VM', async () => {
    const template = join(dir, 'headless.xml');
    await writeFile(template, HEADLESS);
    const vm = spec({ template });
    await adapter.defineVm(vm);
    await adapter.start(vm.name);
    const err = await rejectsWith(adapter.screenshot(vm.name), 'NO_DISPLAY');
    assert.equal(err.subject.vm, vm.name);
  });

  it('a VM that is off: INVALID_POWER_STATE', async () => {
    const vm = spec();
    await adapter.defineVm(vm);
    const err = await rejectsWith(adapter.screenshot(vm.name), 'INVALID_POWER_STATE');
    assert.equal(err.subject.state, 'shutoff');
  });

  it('a VM that does not exist: VM_NOT_FOUND', async () => {
    await rejectsWith(adapter.screenshot('test-no-such-vm-shot'), 'VM_NOT_FOUND');
  });
});
