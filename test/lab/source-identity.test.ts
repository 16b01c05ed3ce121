/**
 * A customer's server reinstalled under the same name, on the real lab (libvirtd, `vmdr serve` as
 * the DR receiver, the built CLI): the protected VM is removed and another one, with another UUID
 * and another disk, is defined under its name. `vmdr sync` refuses it in one line naming both
 * UUIDs before anything is captured, the points stay as they were, a planned failover refuses to
 * stop it, `vmdr status` flags it and the loop of `vmdr serve` raises one alert. `vmdr protect --replace-source` moves the protection onto
 * the new VM: its first point holds the new disk, the old points stay listed and pinned through a
 * retention that would have merged them, and a drill boots the old machine from one of them, until
 * `vmdr points --release replaced`. A rename (same
 * UUID) is followed. The VMs stay shut off: their disks are read from their images, which is the
 * path where nothing but the identity check stood between the new disk and the replica.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLabVm, destroyLabVm, labBoot, makeDisk, runVmdr, type LabVm, writeOneHostConfig } from '../helpers/lab.js';
import { labProtection } from '../helpers/protected-vm.js';
import { compareImages } from '../helpers/patterns.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';
import { assertProgress, type ProgressEvent } from '../helpers/assertions.js';

const exec = promisify(execFile);

interface Point {
  id: string;
  kind: string;
  pinned: boolean;
  replacedSource: string | null;
  disks: { disk: string; image: string }[];
}

describe('a different VM under a protected name does not take over its protection (qemu:///system)', function () {
  this.timeout(240_000);
  let vm: LabVm;
  let config: string;
  let receiver: ServeProcess | undefined;
  let loops: ServeProcess | undefined;
  const newDisk = () => join(vm.dir, 'new-vda.qcow2');

  before(async () => {
    vm = await createLabVm('ident', { marker: 'old', diskSize: '32M' });
    config = await writeOneHostConfig(
      vm,
      labProtection(vm, { network: vm.network, settings: ['rpo: 4s', 'retention: { keep: 2 }', 'health: { serial: "^VMDR-GUEST ready", timeout: 120s }'] }),
    );
    // The DR site's daemon alone: the loops' daemon below is the source site's (it takes the control socket).
    receiver = await startServe(config, { args: ['--no-replicate', '--site', 'dr'] });
  });

  after(async () => {
    await loops?.stop();
    await receiver?.stop();
    if (vm) await vm.adapter.undefine(`${vm.name}-renamed`).catch(() => undefined);
    await destroyLabVm(vm);
  });

  const vmdr = async (args: string[]) => {
    const r = await runVmdr([...args, '--config', config]);
    assert.equal(r.code, 0, `vmdr ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const json = async <T>(args: string[]): Promise<T> => {
    const lines = (await vmdr([...args, '--json'])).trim().split('\n').map((l) => JSON.parse(l) as { event?: string });
    return (lines.find((l) => l.event === 'result') ?? lines.at(-1)) as T;
  };
  const points = () => json<Point[]>(['points', vm.name]);

  it('refuses the new VM in one line naming both UUIDs, flags it, moves onto it only when told, keeps the old points until released', async () => {
    const old = await vm.adapter.getVm(vm.name);
    const protectedOld = await json<{ action: string; source: { uuid: string } }>(['protect', vm.name]);
    assert.deepEqual([protectedOld.action, protectedOld.source.uuid], ['protected', old.id]);
    await json(['sync', vm.name]);
    const before = await points();
    assert.deepEqual(before.map((p) => p.id), ['rp-1', 'rp-2']);
    await compareImages(vm.disk, before[1]!.disks[0]!.image);

    // The reinstall: the VM goes, another one with another disk is defined under its name.
    await vm.adapter.undefine(vm.name);
    await makeDisk(newDisk(), 'new', '32M');
    const replacement = await vm.adapter.defineVm({
      name: vm.name,
      memoryMiB: 256,
      vcpus: 1,
      boot: labBoot(),
      disks: [{ path: newDisk(), format: 'qcow2', target: 'vda' }],
      nics: [{ network: vm.network }],
    });
    assert.notEqual(replacement.id, old.id);

    const refused = await runVmdr(['sync', vm.name, '--config', config]);
    assert.equal(refused.code, 1);
    assert.equal(
      refused.stderr,
      `vmdr: protection "${vm.name}": source VM "${vm.name}" is now UUID ${replacement.id}, not UUID ${old.id} whose recovery points it holds; nothing was synced ` +
        `(if the new VM replaces the old one, run \`vmdr protect ${vm.name} --replace-source\`: the old points stay, pinned)\n`,
    );
    const asJson = await runVmdr(['sync', vm.name, '--json', '--config', config]);
    assert.equal(asJson.code, 1);
    const { error } = JSON.parse(asJson.stderr) as { error: { code: string; recorded: string; found: string } };
    assert.deepEqual([error.code, error.recorded, error.found], ['SOURCE_IDENTITY_CHANGED', old.id, replacement.id]);
    assert.deepEqual(await points(), before, 'the point list is unchanged');
    // `vmdr protect` of the protected name refuses the same way (it would stage the target after the new VM).
    const protectAgain = await runVmdr(['protect', vm.name, '--config', config]);
    assert.equal(protectAgain.code, 1);
    assert.match(protectAgain.stderr, /^vmdr: .* is now UUID .*; nothing was synced/);

    // A planned failover would stop the source: it must not stop a VM that only took the name.
    const planned = await runVmdr(['failover', vm.name, '--planned', '--config', config]);
    assert.equal(planned.code, 1);
    assert.match(planned.stderr, new RegExp(`^vmdr: protection "${vm.name}": source VM "${vm.name}" is now UUID ${replacement.id}, not UUID ${old.id} .*\n$`));
    assert.deepEqual(await points(), before, 'no final sync');

    const [row] = JSON.parse(await vmdr(['status', '--json'])) as { sourceIdentity: { recorded: string; current: string; replaced: boolean } }[];
    assert.deepEqual(row!.sourceIdentity, { recorded: old.id, current: replacement.id, replaced: true, renamedTo: null, problem: null });
    const text = await vmdr(['status']);
    assert.match(text, new RegExp(`${vm.name}@prod\\s+shutoff, REPLACED`));
    assert.match(text, new RegExp(`^${vm.name}: source VM ${vm.name} is another machine \\(UUID ${replacement.id}\\) than the one protected \\(UUID ${old.id}\\)`, 'm'));

    // The loop of `vmdr serve`: one alert, then nothing (no failed cycle, no RPO alert) past the RPO.
    loops = await startServe(config, { args: ['--no-receive', '--site', 'prod'] });
    for (const deadline = Date.now() + 30_000; !loops.events.some((e) => e.event === 'source-replaced'); ) {
      assert.ok(Date.now() < deadline, JSON.stringify(loops.events));
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 6_000));
    await loops.stop();
    const events = loops.events.map((e) => e.event).filter((e) => e !== 'ready' && e !== 'stopped');
    assert.deepEqual(events, ['source-replaced'], JSON.stringify(loops.events));
    const alert = loops.events.find((e) => e.event === 'source-replaced')!;
    assert.deepEqual([alert.recorded, alert.found], [old.id, replacement.id]);
    loops = undefined;

    const moved = await json<{ action: string; kept: string[]; source: { uuid: string }; point: Point }>(['protect', vm.name, '--replace-source']);
    assert.deepEqual([moved.action, moved.kept, moved.source.uuid, moved.point.id], ['source-replaced', ['rp-1', 'rp-2'], replacement.id, 'rp-3']);
    await compareImages(newDisk(), moved.point.disks[0]!.image);
    // Retention keeps 2, and ran after rp-3: the old VM's points are kept all the same.
    await vmdr(['sync', vm.name]);
    await new Promise((r) => setTimeout(r, 1_000));
    const after = await points();
    assert.deepEqual(after.map((p) => [p.id, p.replacedSource]), [['rp-1', old.id], ['rp-2', old.id], ['rp-3', null], ['rp-4', null]]);
    await compareImages(vm.disk, after[1]!.disks[0]!.image);
    assert.match(await vmdr(['points', vm.name]), new RegExp(`^rp-2 .* \\(pinned: replaced VM ${old.id}\\)`, 'm'));
    // Usable for failover: a drill of the old VM's newest point boots the old machine's disk, and
    // ending the drill (which unpins what it pinned) leaves the point kept.
    const drill = await runVmdr(['failover', vm.name, '--test', '--point', 'rp-2', '--json', '--config', config]);
    assert.equal(drill.code, 0, drill.stderr);
    const report = JSON.parse(drill.stdout.trim().split('\n').pop()!) as { vms: { status: string; point: string; guest?: string }[] };
    assert.equal(report.vms[0]!.status, 'healthy');
    assert.match(report.vms[0]!.guest ?? '', / marker=old /);
    assert.deepEqual((await points()).map((p) => [p.id, p.pinned, p.replacedSource]).slice(0, 2), [['rp-1', false, old.id], ['rp-2', false, old.id]]);
    const [row2] = JSON.parse(await vmdr(['status', '--json'])) as { sourceIdentity: { replaced: boolean; recorded: string } }[];
    assert.deepEqual([row2!.sourceIdentity.replaced, row2!.sourceIdentity.recorded], [false, replacement.id]);

    assert.equal(await vmdr(['points', vm.name, '--release', 'replaced']), `${vm.name}: released rp-1, rp-2: retention may merge them now\n`);

    // Renamed (same UUID): followed, with a warning, and the next retention merges the released points.
    await exec('virsh', ['-c', 'qemu:///system', 'domrename', vm.name, `${vm.name}-renamed`]);
    const renamed = await json<{ source: { vm: string; uuid: string }; warnings: string[]; point: Point }>(['sync', vm.name]);
    assert.deepEqual(renamed.source, { vm: `${vm.name}-renamed`, uuid: replacement.id });
    assert.ok(renamed.warnings.some((w) => w.includes(`is now named "${vm.name}-renamed"`)), renamed.warnings.join('\n'));
    await compareImages(newDisk(), renamed.point.disks[0]!.image);
    for (const deadline = Date.now() + 20_000; ; ) {
      const left = (await points()).map((p) => p.id);
      if (left.join() === 'rp-4,rp-5') break;
      assert.ok(Date.now() < deadline, `retention did not merge the released points: ${left.join()}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    // The receiver's daemon logged the merge as steps (overlays committed into base), not bytes.
    const merged = () => (receiver!.events as unknown as ProgressEvent[]).filter((e) => e.event === 'progress');
    for (const deadline = Date.now() + 20_000; !merged().some((e) => e.subject?.point === 'rp-4' && e.done === e.total); ) {
      assert.ok(Date.now() < deadline, `no merge logged: ${JSON.stringify(receiver!.events)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assertProgress(merged(), ['merge']);
    assert.ok(merged().every((e) => e.unit === 'steps' && e.subject?.protection === vm.name), JSON.stringify(merged()));
    const [row3] = JSON.parse(await vmdr(['status', '--json'])) as { sourceIdentity: { renamedTo: string | null } }[];
    assert.equal(row3!.sourceIdentity.renamedTo, `${vm.name}-renamed`);
  });
});
