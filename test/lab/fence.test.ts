/**
 * A fenced source stays fenced, on the real lab (qemu:///system with vmdr's qemu hook): the fence
 * powers the source off, marks it and turns its autostart off; a plain `virsh start` is refused
 * with the way back; vmdr's own start lifts the fence and puts the autostart back. The source
 * site's `vmdr serve` fences the source at the DR site's first answer after a failover, also when
 * it starts with the VM running (libvirt's autostart at boot), `vmdr status` shows it, and the
 * loop lifts the fence once the failover is over.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { fenceSource, startUnfenced } from '../../plugin/sites/fence.js';
import { setRole } from '../../plugin/state/roles.js';
import { StateStore } from '../../plugin/state/store.js';
import type { ProtectionStatus } from '../../plugin/protections/status.js';
import { createLabVm, destroyLabVm, labBoot, runVmdr, type LabVm } from '../helpers/lab.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const START_DAEMONS = join(import.meta.dirname, '..', '..', 'scripts', 'lab', 'start-daemons');

/** Runs virsh on the lab's libvirtd; resolves with its exit code and output whatever the code. */
async function virsh(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec('virsh', ['-c', URI, ...args], { env: { ...process.env, LC_ALL: 'C' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const domstate = async (vm: string) => (await virsh('domstate', vm)).stdout.trim();
const autostart = async (vm: string) => /^Autostart:\s*(\S+)/m.exec((await virsh('dominfo', vm)).stdout)?.[1];

interface Event {
  event: string;
  failover?: string;
  was?: string;
  vm?: string;
  result?: unknown;
}

describe('a fenced source stays fenced (qemu:///system)', function () {
  this.timeout(240_000);
  let vm: LabVm;
  let protection: string;
  let receiverConfig: string;
  let sourceConfig: string;
  let receiver: ServeProcess | undefined;
  let loops: ServeProcess | undefined;
  const refusal = (failover: string) =>
    `vmdr: VM ${vm.name} is the fenced source of protection ${protection}, failed over to its DR site (${failover}); ` +
    `start it with "vmdr failback ${protection}" (or "vmdr failover ${protection} --revert" to discard the DR side)`;

  before(async () => {
    // Installs this tree's hook (scripts/hooks/libvirt-qemu) when the installed one differs.
    await exec(START_DAEMONS);
    vm = await createLabVm('fence', { marker: 'fence', diskSize: '32M' });
    protection = vm.name;
    // A source vmdr did not make: no vmdr metadata at all, and libvirt's autostart on.
    assert.equal((await virsh('metadata', vm.name, 'https://vmdr.dev/xmlns/1', '--remove', '--config')).code, 0);
    assert.equal((await virsh('autostart', vm.name)).code, 0);
    await vm.adapter.start(vm.name);
    const yaml = (state: string, port: number) => `version: 1
state: { path: ${join(vm.dir, state)} }
sites:
  - { name: prod, uri: "${URI}" }
  - name: dr
    uri: "${URI}"
    storage: ${join(vm.dir, 'replicas')}
    receiver: { listen: "127.0.0.1:${port}", credentials: ${join(vm.dir, 'receiver')} }
protections:
  - name: ${protection}
    source: { site: prod, vm: ${vm.name} }
    continuous: true
    rpo: 5s
    target:
      site: dr
      vm: ${vm.name}-dr
      boot: { kind: kernel, kernel: ${labBoot().kernel}, initrd: ${labBoot().initrd} }
      nics: [{ network: ${vm.network} }]
`;
    const port = await freeLoopbackPort();
    receiverConfig = join(vm.dir, 'vmdr.yaml');
    // A source host of its own state file: it learns of the failover only from the DR receiver.
    sourceConfig = join(vm.dir, 'vmdr-source.yaml');
    await writeFile(receiverConfig, yaml('state.db', port));
    await writeFile(sourceConfig, yaml('state-source.db', port));
  });

  after(async () => {
    await loops?.stop();
    await receiver?.stop();
    await destroyLabVm(vm);
  });

  it('fences a running source: off, marked, autostart off; `virsh start` is refused with the way back', async () => {
    const fenced = await fenceSource(vm.adapter, vm.name, { protection, failover: 'fo-test-1' });
    assert.equal(fenced.was, 'running');
    assert.equal(fenced.already, false);
    assert.equal(await domstate(vm.name), 'shut off');
    assert.equal(await autostart(vm.name), 'disable');
    const info = await vm.adapter.getVm(vm.name);
    assert.equal(info.autostart, false);
    assert.deepEqual(info.labels, { role: 'fenced', protection, failover: 'fo-test-1', 'fenced-at': fenced.fencedAt, autostart: 'on' });

    const r = await virsh('start', vm.name);
    assert.notEqual(r.code, 0);
    assert.ok(r.stderr.includes(refusal('fo-test-1')), `virsh said: ${r.stderr}`);
    assert.equal(await domstate(vm.name), 'shut off');

    // Again (a retried failover, the loop after the runner): nothing changes, the first time stays.
    const again = await fenceSource(vm.adapter, vm.name, { protection, failover: 'fo-test-1' });
    assert.deepEqual(again, { fencedAt: fenced.fencedAt, was: 'shutoff', already: true });
  });

  it("vmdr's start lifts the fence: the VM runs, its autostart is back, no vmdr mark is left on it", async () => {
    await startUnfenced(vm.adapter, vm.name);
    assert.equal(await domstate(vm.name), 'running');
    assert.equal(await autostart(vm.name), 'enable');
    assert.deepEqual((await vm.adapter.getVm(vm.name)).labels, {});
    assert.ok(!(await virsh('dumpxml', '--inactive', vm.name)).stdout.includes('vmdr.dev'), 'no vmdr metadata on a VM vmdr did not make');
  });

  it("vmdr serve fences the source at the DR site's first answer after a failover, and at its own start; status shows it; lifted when it is over", async () => {
    receiver = await startServe(receiverConfig, { args: ['--no-replicate', '--site', 'dr'] });
    loops = await startServe(sourceConfig, { args: ['--no-receive', '--site', 'prod'] });
    const events = () => loops!.events as unknown as Event[];
    const waitFor = async (what: string, ok: () => boolean) => {
      for (const deadline = Date.now() + 120_000; !ok(); ) {
        assert.ok(Date.now() < deadline, `${what}: ${JSON.stringify(events())}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await waitFor('a committed cycle', () => events().some((e) => e.event === 'cycle' && e.result));

    // As a failover marks it: the role in the DR site's state file, which the receiver answers from.
    const dr = StateStore.open(join(vm.dir, 'state.db'));
    try {
      setRole(dr.db, protection, 'failed-over', { failover: 'fo-test-serve' });
      await waitFor('the fence', () => events().some((e) => e.event === 'source-fenced'));
      const fenced = events().filter((e) => e.event === 'source-fenced');
      assert.deepEqual(
        fenced.map((e) => [e.vm, e.failover, e.was]),
        [[vm.name, 'fo-test-serve', 'running']],
      );
      assert.equal(await domstate(vm.name), 'shut off');
      const r = await virsh('start', vm.name);
      assert.notEqual(r.code, 0);
      assert.ok(r.stderr.includes(refusal('fo-test-serve')), `virsh said: ${r.stderr}`);

      const status = await runVmdr(['status', '--json', '--config', sourceConfig]);
      assert.equal(status.code, 0, status.stderr);
      const row = (JSON.parse(status.stdout) as ProtectionStatus[])[0]!;
      assert.equal(row.source.state, 'shutoff');
      assert.equal(row.source.fenced?.failover, 'fo-test-serve');
      const table = await runVmdr(['status', '--config', sourceConfig]);
      assert.match(table.stdout, /shutoff, FENCED/);
      await loops.stop();
      loops = undefined;

      // The source host rebooted while the protection is failed over: libvirt's autostart (or
      // someone) started the source before vmdr serve. Its first answer from the DR site fences it,
      // before any cycle.
      await startUnfenced(vm.adapter, vm.name);
      loops = await startServe(sourceConfig, { args: ['--no-receive', '--site', 'prod'] });
      await waitFor('the fence at start', () => events().some((e) => e.event === 'source-fenced'));
      const first = events().filter((e) => ['source-fenced', 'cycle'].includes(e.event));
      assert.equal(first[0]!.event, 'source-fenced', JSON.stringify(events()));
      assert.equal(first[0]!.was, 'running');
      assert.equal(await domstate(vm.name), 'shut off');
      assert.equal(await autostart(vm.name), 'disable');

      // The failover is over (a revert or a failback gave the replica back): the first committed
      // cycle lifts the fence it left, and starts nothing.
      setRole(dr.db, protection, 'replicating');
      await waitFor('the fence lifted', () => events().some((e) => e.event === 'source-unfenced'));
      assert.equal(events().find((e) => e.event === 'source-unfenced')!.failover, 'fo-test-serve');
      assert.equal(await autostart(vm.name), 'enable');
      assert.deepEqual((await vm.adapter.getVm(vm.name)).labels, {});
      assert.equal(await domstate(vm.name), 'shut off');
      await loops.stop();
      assert.equal(await loops.exited, 0);
      loops = undefined;
    } finally {
      setRole(dr.db, protection, 'replicating');
      dr.close();
    }
  });
});
