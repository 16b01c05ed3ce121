/**
 * The split-brain guard on the real lab: libvirtd with vmdr's qemu hook (scripts/hooks/libvirt-qemu,
 * installed as /etc/libvirt/hooks/qemu by scripts/lab/setup) refuses anyone's start of a replica
 * target (role=target) but vmdr's own, which goes through the adapter and its start token.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import { START_TOKEN_DIR, startTokenApplies, startTokenPath } from '../../hypervisors/libvirt/start-token.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { ensureLabGuest, GUEST_READY, labBoot, labScratchDir, makeDisk, parseGuestFields, waitForSerialLine } from '../helpers/lab.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const HOOK_SOURCE = join(import.meta.dirname, '..', '..', 'scripts', 'hooks', 'libvirt-qemu');
const HOOK_INSTALLED = '/etc/libvirt/hooks/qemu';

/** Runs virsh on the lab's libvirtd; resolves with its exit code and output whatever the code. */
async function virsh(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec('virsh', ['-c', URI, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

async function domstate(vm: string): Promise<string> {
  const r = await virsh('domstate', vm);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

const exists = (file: string) => access(file).then(() => true, () => false);

describe('split-brain guard: the libvirt qemu hook (qemu:///system)', function () {
  this.timeout(120_000);
  const id = randomBytes(3).toString('hex');
  const network = `test-sbnet-${id}`;
  const protection = `test-p1-${id}`;
  const vms = { target: `test-sb-target-${id}`, promoted: `test-sb-promoted-${id}`, plain: `test-sb-plain-${id}` };
  let adapter: HypervisorAdapter;
  let dir: string;
  const log = (vm: string) => join(dir, `${vm}.console.log`);

  before(async () => {
    await ensureLabGuest();
    dir = await labScratchDir('split-brain');
    adapter = openAdapter(URI);
    await adapter.connect();
    await adapter.ensureIsolatedNetwork({ name: network });
    const labels: Record<string, Record<string, string>> = {
      [vms.target]: { role: 'target', protection },
      [vms.promoted]: { role: 'promoted', protection },
      [vms.plain]: {},
    };
    for (const vm of Object.values(vms)) {
      const disk = join(dir, `${vm}.qcow2`);
      await makeDisk(disk, vm);
      await adapter.defineVm({
        name: vm,
        memoryMiB: 256,
        vcpus: 1,
        boot: labBoot(),
        disks: [{ path: disk, format: 'qcow2', target: 'vda' }],
        nics: [{ network }],
        serialLog: log(vm),
        labels: labels[vm],
      });
    }
    // defineVm marks every VM it makes with vmdr's (here empty) labels element; a VM someone else
    // defined has none at all.
    const removed = await virsh('metadata', vms.plain, 'https://vmdr.dev/xmlns/1', '--remove', '--config');
    assert.equal(removed.code, 0, removed.stderr);
  });

  after(async () => {
    for (const vm of Object.values(vms)) {
      await adapter?.stop(vm, { mode: 'force' }).catch(() => undefined);
      await adapter?.undefine(vm).catch(() => undefined);
      await rm(startTokenPath(vm), { force: true });
    }
    await adapter?.removeNetwork(network).catch(() => undefined);
    await adapter?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is installed: /etc/libvirt/hooks/qemu is scripts/hooks/libvirt-qemu', async () => {
    assert.deepEqual(await readFile(HOOK_INSTALLED), await readFile(HOOK_SOURCE));
  });

  it('refuses `virsh start` of a replica target, naming its protection and `vmdr failover`', async () => {
    const r = await virsh('start', vms.target);
    assert.notEqual(r.code, 0);
    const line = `vmdr: VM ${vms.target} is the DR replica target of protection ${protection} and is under replication; start it with "vmdr failover ${protection}" (or "vmdr failover ${protection} --test" for a drill)`;
    assert.ok(r.stderr.includes(line), `virsh said: ${r.stderr}`);
    assert.equal(await domstate(vms.target), 'shut off');
  });

  it('does not take a stale start token (older than 120 s)', async () => {
    const token = startTokenPath(vms.target);
    await mkdir(START_TOKEN_DIR, { recursive: true, mode: 0o700 });
    await writeFile(token, 'stale\n', { mode: 0o600 });
    const old = new Date(Date.now() - 200_000);
    await utimes(token, old, old);
    try {
      const r = await virsh('start', vms.target);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /vmdr failover/);
      assert.equal(await domstate(vms.target), 'shut off');
    } finally {
      await rm(token, { force: true });
    }
  });

  it("lets vmdr's own start through the adapter boot the target, and leaves no token behind", async () => {
    await adapter.start(vms.target);
    const ready = await waitForSerialLine({ vm: vms.target, file: log(vms.target), pattern: GUEST_READY, timeoutMs: 60_000 });
    assert.equal(parseGuestFields(ready[1]!).marker, vms.target);
    assert.equal(await exists(startTokenPath(vms.target)), false);
    await adapter.stop(vms.target, { mode: 'force' });
  });

  it('leaves promoted VMs and VMs without vmdr labels alone: plain `virsh start` works', async () => {
    for (const vm of [vms.promoted, vms.plain]) {
      const r = await virsh('start', vm);
      assert.equal(r.code, 0, `virsh start ${vm}: ${r.stderr}`);
      assert.equal(await domstate(vm), 'running');
      await adapter.stop(vm, { mode: 'force' });
    }
  });

  it("writes tokens only for the local system libvirtd, whose hook reads this host's /run", () => {
    for (const uri of ['qemu:///system', 'qemu+unix:///system', 'qemu:///system?socket=/run/libvirt/libvirt-sock']) assert.equal(startTokenApplies(uri), true, uri);
    for (const uri of ['qemu+ssh://dr1/system', 'qemu+tls://dr1/system', 'qemu://dr1/system', 'qemu:///session', 'test:///default']) assert.equal(startTokenApplies(uri), false, uri);
  });
});
