/**
 * A tenant's quotas across two real sites (test/helpers/two-sites.ts): the DR site holds the
 * tenant's replica under its own directory, knows what it occupies, and refuses a cycle that
 * would pass the tenant's storage quota before anything is written; the source site's `vmdr sync`
 * fails with one line naming the tenant and the quota, the replica stays at its point with its
 * bytes, and once the quota is raised the next sync ships the change. A config with more
 * protections than the tenant's VM quota is refused, and `vmdr protect` of a VM beyond it too.
 * The same again with both sites on this host (one libvirtd, one loopback, a config per site).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../plugin/config/load.js';
import { tenantUsage } from '../../plugin/tenants/usage.js';
import { assertOneLineError } from '../helpers/assertions.js';
import { bootLabVm, createLabVm, destroyLabVm, ensureLabGuest, labScratchDir, runVmdr, type LabVm } from '../helpers/lab.js';
import { assertPattern, hmpWrite } from '../helpers/patterns.js';
import { twoSites, writeTwoSiteConfigs, type LabSite, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** 40 MiB: the lab guest's first point fits, a write of what is left plus 4 MiB does not. */
const QUOTA_GIB = 0.0390625;
/** Where the test writes into the guest's 96 MiB disk, past the filesystem's first blocks. */
const WRITE_AT = 48 * MiB;

interface Point {
  id: string;
  disks: { disk: string; image: string }[];
}

async function points(site: LabSite, config: string, protection: string): Promise<Point[]> {
  const r = await site.vmdr(['points', protection, '--json'], { config });
  assert.equal(r.code, 0, `vmdr points on site ${site.name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Point[];
}

async function virsh(site: LabSite, ...args: string[]): Promise<void> {
  const r = await site.exec('virsh', ['-q', ...args]);
  assert.equal(r.code, 0, `virsh ${args.join(' ')} on site ${site.name}: ${r.stderr}`);
}

/** What `du` says the files under `dir` occupy, in bytes. */
async function du(dir: string): Promise<number> {
  const { stdout } = await exec('sh', ['-c', 'find "$1" -type f -print0 | du -c --block-size=1 --files0-from=- | tail -n 1', 'du', dir]);
  return Number(stdout.split('\t')[0]);
}

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
}

/** A site that is this host itself: commands and daemons run here, on this host's libvirtd. */
function thisHost(name: 'source' | 'dr'): LabSite {
  const here = async (cmd: string, args: string[]) => {
    try {
      const { stdout, stderr } = await exec(cmd, args, { maxBuffer: 64 * MiB });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  };
  const unused = () => {
    throw new Error('not on one host');
  };
  return {
    name,
    wanAddress: '127.0.0.1',
    via: [],
    uri: 'qemu:///system',
    exec: here,
    vmdr: (args, options) => runVmdr([...args, '--config', options.config]),
    serve: (config, options = {}) => startServe(config, options),
    startVmdr: unused,
    kill: unused,
    up: unused,
  };
}

for (const where of ['across two sites', 'with both sites on one host'] as const) describe(`a tenant's storage directory and quotas, ${where}`, function () {
  this.timeout(300_000);
  const oneHost = where !== 'across two sites';
  let lab: Pick<TwoSites, 'source' | 'dr'>;
  let vm: LabVm | undefined;
  let dir: string;
  let configs: TwoSiteConfigs;
  let drServe: ServeProcess | undefined;
  const protection = `test-quota-${process.pid.toString(36)}`;
  const tenant = 'acme';
  let atFirstPoint: string;
  let first: Point;
  let replicaDir: string;

  const protectionYaml = (name: string, target = `${name}-dr`) => `  - name: ${name}
    tenant: ${tenant}
    source: { site: source, vm: ${vm!.name} }
    rpo: 1h
    target: { site: dr, vm: ${target}, nics: [{ network: ${vm!.network} }] }`;
  const tenantsYaml = (quota: string) => `tenants:\n  - { name: ${tenant}, quota: { ${quota} } }`;

  /** Bytes the source site has sent over its WAN link so far. */
  const wanSent = async () => Number((await lab.source.exec('cat', ['/sys/class/net/vmdrwan-source/statistics/tx_bytes'])).stdout);

  before(async () => {
    lab = oneHost ? { source: thisHost('source'), dr: thisHost('dr') } : await twoSites();
    await ensureLabGuest();
    dir = await labScratchDir('quotas');
    atFirstPoint = join(dir, 'at-first-point.qcow2');
    vm = await createLabVm('quota', { marker: 'quotas', diskSize: '96M', uri: lab.source.uri });
    configs = await writeTwoSiteConfigs(dir, { protections: protectionYaml(protection), extra: tenantsYaml(`storageGiB: ${QUOTA_GIB}, vms: 1`), oneHost });
    replicaDir = join(configs.storage.dr, 'tenants', tenant, protection);
    await bootLabVm(vm);
  });

  after(async () => {
    await drServe?.stop().catch(() => undefined);
    await destroyLabVm(vm);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("the first sync fits the quota and lands in the tenant's own directory, private to vmdr", async () => {
    drServe = await lab.dr.serve(configs.dr);
    // Paused, the guest writes nothing between the cycle's checkpoint and the copy kept of it.
    await virsh(lab.source, 'suspend', vm!.name);
    try {
      const sync = await lab.source.vmdr(['sync', protection], { config: configs.source });
      assert.equal(sync.code, 0, sync.stderr);
      const copy = await lab.source.exec('qemu-img', ['convert', '-U', '-O', 'qcow2', vm!.disk, atFirstPoint]);
      assert.equal(copy.code, 0, copy.stderr);
    } finally {
      await virsh(lab.source, 'resume', vm!.name);
    }
    first = (await points(lab.dr, configs.dr, protection))[0]!;
    assert.equal(first!.disks[0]!.image, join(replicaDir, 'vda', 'point-1.qcow2'));
    for (const d of ['tenants', `tenants/${tenant}`, `tenants/${tenant}/${protection}`, `tenants/${tenant}/${protection}/vda`]) {
      assert.equal((await stat(join(configs.storage.dr, d))).mode & 0o777, 0o700, `${d} is 0700 (QEMU is let through only to boot from it)`);
    }
    for (const file of await filesUnder(replicaDir)) assert.equal((await stat(file)).mode & 0o777, 0o600, `${file} is 0600`);

    const { config } = await loadConfig(configs.dr);
    const used = (await tenantUsage(configs.storage.dr, config)).get(tenant)!;
    assert.equal(used, await du(replicaDir), 'tenantUsage is what du says');
    assert.ok(used < QUOTA_GIB * GiB, `the first point (${used} bytes) fits the quota`);
    process.stdout.write(`      (the first point occupies ${(used / MiB).toFixed(1)} MiB of the tenant's ${(QUOTA_GIB * 1024).toFixed(0)} MiB)\n`);
  });

  it('a sync that would pass the quota fails with one line naming the tenant and the quota, and commits nothing', async () => {
    const { config } = await loadConfig(configs.dr);
    const used = (await tenantUsage(configs.storage.dr, config)).get(tenant)!;
    // What is left, and 4 MiB more, in 64 KiB blocks (the bitmap's granularity).
    const length = Math.ceil((QUOTA_GIB * GiB - used + 4 * MiB) / (64 * 1024)) * 64 * 1024;
    assert.ok(WRITE_AT + length <= 96 * MiB, `the write (${length} bytes) fits the disk`);
    await hmpWrite(vm!.name, 0, '0x5a', WRITE_AT, length, lab.source.uri);
    const before = await filesUnder(replicaDir);
    const sent = await wanSent();

    const sync = await lab.source.vmdr(['sync', protection], { config: configs.source });
    if (!oneHost) {
      // Refused on its header: of the cycle's bytes, next to none crossed the WAN.
      const crossed = (await wanSent()) - sent;
      assert.ok(crossed < MiB, `${crossed} bytes left the source site for a refused cycle of ${length}`);
      process.stdout.write(`      (the refused cycle of ${(length / MiB).toFixed(1)} MiB sent ${(crossed / 1024).toFixed(1)} KiB over the WAN)\n`);
    }
    assertOneLineError(sync, new RegExp(`tenant "${tenant}" would pass its storage quota on site "dr": its replicas use \\d+ bytes of ${Math.floor(QUOTA_GIB * GiB)} \\(quota.storageGiB ${QUOTA_GIB}\\), and this cycle of protection "${protection}" brings ${length}`));
    process.stdout.write(`      (${sync.stderr.trim()})\n`);

    // The replica: the same newest point, the same bytes, the same files.
    assert.deepEqual((await points(lab.dr, configs.dr, protection)).map((p) => p.id), [first.id]);
    const cmp = await lab.dr.exec('qemu-img', ['compare', '-U', atFirstPoint, first.disks[0]!.image]);
    assert.equal(cmp.code, 0, `the point's bytes are the first point's: ${cmp.stdout}${cmp.stderr}`);
    assert.deepEqual(await filesUnder(replicaDir), before);
    // The source records the failed cycle with its code, as `vmdr status` shows it.
    const status = await lab.source.vmdr(['status', '--json'], { config: configs.source });
    const [row] = JSON.parse(status.stdout) as { lastSync: { outcome: string; error: string } }[];
    assert.equal(row!.lastSync.outcome, 'failed');
    assert.match(row!.lastSync.error, /^QUOTA_EXCEEDED: tenant "acme"/);
  });

  it('once the quota is raised (the YAML edited), the next sync ships the change', async () => {
    for (const file of [configs.dr, configs.source]) {
      const yaml = await readFile(file, 'utf8');
      await writeFile(file, yaml.replace(`storageGiB: ${QUOTA_GIB}`, 'storageGiB: 1'));
    }
    await drServe!.stop();
    drServe = await lab.dr.serve(configs.dr);
    await virsh(lab.source, 'suspend', vm!.name);
    try {
      const sync = await lab.source.vmdr(['sync', protection], { config: configs.source });
      assert.equal(sync.code, 0, sync.stderr);
      const after = await points(lab.dr, configs.dr, protection);
      assert.deepEqual(after.map((p) => p.id), [first.id, 'rp-2']);
      const image = after[1]!.disks[0]!.image;
      await assertPattern(image, '0x5a', WRITE_AT, 4 * MiB);
      const cmp = await lab.dr.exec('qemu-img', ['compare', '-U', vm!.disk, image]);
      assert.equal(cmp.code, 0, `the new point equals the source disk: ${cmp.stdout}${cmp.stderr}`);
    } finally {
      await virsh(lab.source, 'resume', vm!.name);
    }
  });

  it('quota.vms: a config with more of the tenant\'s protections is refused naming the path, and `vmdr protect` beyond it', async () => {
    const over = join(dir, 'over.yaml');
    const yaml = (await readFile(configs.source, 'utf8')).replace('protections:\n', `protections:\n${protectionYaml('test-quota-second')}\n`);
    await writeFile(over, yaml, { mode: 0o600 });
    const check = await lab.source.vmdr(['config', 'check', over], { config: over });
    assertOneLineError(check, new RegExp(`over\\.yaml.*protections\\[1\\]\\.tenant: tenant "acme" may have 1 protected VM \\(quota\\.vms\\): protection "${protection}" is its 2nd$`));

    // The first protection leaves the config, its replica stays on the DR site; another takes its place.
    const other = `test-quota-other-${process.pid.toString(36)}`;
    for (const file of [configs.dr, configs.source]) {
      const text = await readFile(file, 'utf8');
      await writeFile(file, text.replace(/protections:\n[\s\S]*?\n(?=tenants:)/, `protections:\n${protectionYaml(other)}\n`));
    }
    await drServe!.stop();
    drServe = await lab.dr.serve(configs.dr);
    const protect = await lab.source.vmdr(['protect', other], { config: configs.source });
    assertOneLineError(protect, new RegExp(`tenant "acme" may have 1 protected VM \\(quota\\.vms\\) and site "dr" holds replicas of 1 \\(${protection}\\): protection "${other}" is refused`));
    await assert.rejects(stat(join(configs.storage.dr, 'tenants', tenant, other)), { code: 'ENOENT' });
  });
});
