/**
 * Failback with its source side remote: the source site's `vmdr serve` (its own config with
 * `localSite: prod`, its own state file) on 127.0.0.1, the DR side's `vmdr failback` with
 * `localSite: dr`, so the DR VM's blocks reach the source's image only through that endpoint.
 * Faults on the way: the source site unreachable (a clear error, the run resumable), its daemon
 * killed -9 while it writes, the DR side killed -9 in the middle of a pass. Judged by the source's
 * image against the DR VM's disk, byte for byte, the report's passes, and the source coming up.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../plugin/config/load.js';
import type { FailoverReport } from '../../plugin/failover/report.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { failbackSourceOf } from '../../plugin/sites/failback-source.js';
import { runVmdr, type LabVm } from '../helpers/lab.js';
import { createProtectedLabVm, destroyProtectedLabVm } from '../helpers/protected-vm.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';

describe('vmdr failback to a remote source site (its vmdr serve on loopback)', function () {
  this.timeout(900_000);
  let vm: LabVm;
  let drConfig: string;
  let failbackConfig: string;
  let sourceConfig: string;
  let drServe: ServeProcess | undefined;
  let sourceServe: ServeProcess | undefined;
  let drNetwork: string;
  const target = () => `${vm.name}-dr`;
  const virsh = (...args: string[]) => exec('virsh', ['-c', URI, ...args]).then((r) => r.stdout.trim());
  const failback = (config: string, ...args: string[]) =>
    runVmdr(
      ['failback', vm.name, '--shutdown-timeout', '2s', '--json', '--config', config, ...args.filter((a) => !a.startsWith('VMDR_'))],
      Object.fromEntries(args.filter((a) => a.startsWith('VMDR_')).map((a) => a.split('=') as [string, string])),
    );

  before(async () => {
    let base: string;
    ({ vm, drNetwork, config: base } = await createProtectedLabVm('fbremote'));
    // The source site gets an endpoint of its own, and the two sites are paired below.
    const prod = `  - name: prod\n    uri: "qemu:///system"\n    storage: ${join(vm.dir, 'source-storage')}\n    receiver: { listen: "127.0.0.1:${await freeLoopbackPort()}", credentials: ${join(vm.dir, 'endpoint-prod')} }`;
    const text = (await readFile(base, 'utf8')).replace('  - { name: prod, uri: "qemu:///system" }', prod);
    drConfig = join(vm.dir, 'dr.yaml');
    failbackConfig = join(vm.dir, 'dr-local.yaml');
    sourceConfig = join(vm.dir, 'source.yaml');
    await writeFile(drConfig, text);
    await writeFile(failbackConfig, `localSite: dr\n${text}`);
    await writeFile(sourceConfig, `localSite: prod\n${text.replace(join(vm.dir, 'state.db'), join(vm.dir, 'source-state.db'))}`);
    drServe = await startServe(drConfig, { args: ['--no-replicate', '--site', 'dr'] });
    // Its first start makes the source site's certificate; each site then pins the other's.
    sourceServe = await startServe(sourceConfig, { args: ['--no-replicate', '--site', 'prod'] });
    for (const [config, peer, cert] of [
      [failbackConfig, 'prod', join(vm.dir, 'endpoint-prod', 'tls.crt')],
      [sourceConfig, 'dr', join(vm.dir, 'receiver', 'tls.crt')],
    ] as const) {
      const r = await runVmdr(['site', 'pair', peer, '--cert', cert, '--config', config]);
      assert.equal(r.code, 0, `vmdr site pair ${peer}: ${r.stderr}`);
    }
    for (const args of [['target', 'provision'], ['protect', vm.name], ['failover', vm.name, '--force']]) {
      const r = await runVmdr([...args, '--config', drConfig]);
      assert.equal(r.code, 0, `vmdr ${args.join(' ')}: ${r.stderr}`);
    }
  });

  after(async () => {
    await sourceServe?.stop();
    await drServe?.stop();
    await destroyProtectedLabVm(vm, drNetwork);
  });

  it('what the DR VM wrote reaches the source only through its site, byte for byte, through an unreachable site and either side killed -9 mid-pass', async () => {
    await virsh('qemu-monitor-command', target(), '--hmp', 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x5d 9M 192k"');

    // Every run below is the DR side's (`localSite: dr`), where the source's hypervisor cannot be
    // opened at all (SITE_NOT_LOCAL): its preflight, copy passes, start and health go through the
    // source site's daemon.
    const checked = await failback(failbackConfig, 'VMDR_FAILPOINT=failover-after-preflight');
    assert.equal(checked.signal, 'SIGKILL', checked.stderr);

    // The source site is down: one line naming it, nothing lost, the run resumable.
    await sourceServe!.stop();
    const away = await failback(failbackConfig, '--resume');
    assert.equal(away.code, 1, away.stderr);
    assert.equal(away.stderr.trim().split('\n').length, 1, away.stderr);
    const { error } = JSON.parse(away.stderr) as { error: { cause: string; step: string; message: string } };
    assert.equal(error.cause, 'PEER_UNREACHABLE');
    assert.equal(error.step, 'reverse-sync');
    assert.match(error.message, /cannot reach the endpoint of site "prod"/);

    // The source site's daemon killed -9 while it writes the first frame into the source's image.
    sourceServe = await startServe(sourceConfig, { args: ['--no-replicate', '--site', 'prod'], env: { VMDR_FAILPOINT: 'receiver-frame' } });
    const cut = await failback(failbackConfig, '--resume');
    assert.equal(await sourceServe.exited, 'SIGKILL');
    assert.equal(cut.code, 1, cut.stderr);
    assert.equal((JSON.parse(cut.stderr) as { error: { cause: string } }).error.cause, 'PEER_UNREACHABLE');

    // The DR side killed -9 in the middle of sending a pass's blocks (the DR VM wrote more meanwhile).
    await virsh('qemu-monitor-command', target(), '--hmp', 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x6e 20M 64k"');
    sourceServe = await startServe(sourceConfig, { args: ['--no-replicate', '--site', 'prod'] });
    const killed = await failback(failbackConfig, '--resume', 'VMDR_FAILPOINT=failback-sending@3');
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    // Killed once both passes are done and the target is restored, before the source starts: the images must be equal now.
    const beforeStart = await failback(failbackConfig, '--resume', 'VMDR_FAILPOINT=failover-after-restore-target');
    assert.equal(beforeStart.signal, 'SIGKILL', beforeStart.stderr);
    const points = JSON.parse((await runVmdr(['points', vm.name, '--json', '--config', drConfig])).stdout) as { disks: { image: string }[] }[];
    const drDisk = points.at(-1)!.disks[0]!.image;
    await exec('qemu-img', ['compare', '-U', '-f', 'qcow2', '-F', 'qcow2', vm.disk, drDisk]);
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x5d 9M 192k', vm.disk]);
    await exec('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', 'read -P 0x6e 20M 64k', vm.disk]);

    const done = await failback(failbackConfig, '--resume');
    assert.equal(done.code, 0, done.stderr);
    const report = JSON.parse(done.stdout.trim().split('\n').pop()!) as FailoverReport;
    const mine = report.vms[0]!;
    assert.equal(mine.vm, vm.name, 'the VM that came up is the source');
    assert.equal(mine.status, 'healthy');
    assert.match(mine.guest!, /marker=fbremote-src /);
    assert.deepEqual(mine.passes!.map((x) => x.step), ['reverse-sync', 'final-delta']);
    for (const pass of mine.passes!) assert.equal(pass.bytesCompared, 32 * 1024 * 1024, pass.step);
    // The 192 KiB the DR VM wrote went home in the passes before; the last ones found little or nothing left.
    assert.ok(mine.passes!.every((x) => x.bytesDiffering! < 4 * 1024 * 1024), JSON.stringify(mine.passes));
    assert.equal(await virsh('domstate', vm.name), 'running');
    assert.equal(await virsh('domstate', target()), 'shut off');

    // Now it runs, its site opens no writer on its disk, whoever asks.
    const { config } = await loadConfig(failbackConfig);
    const sites = new SiteConnections(config, failbackConfig);
    const source = await failbackSourceOf({ config, file: failbackConfig, sites }, config.protections[0]!);
    try {
      await assert.rejects(source.hashes(config.protections[0]!, 'vda', 32 * 1024 * 1024), { code: 'INVALID_POWER_STATE' });
    } finally {
      source.close();
      await sites.close();
    }
  });
});
