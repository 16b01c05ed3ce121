/**
 * A guest identity through the libvirt adapter on the test driver: NIC MACs in the definition,
 * and the NoCloud seed it writes beside the VM's disk, read back from the ISO with xorriso the
 * way a guest would find it (volume label, meta-data, user-data, network-config).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { openAdapter } from '../../hypervisors/index.js';
import type { GuestIdentity, HypervisorAdapter } from '../../hypervisors/types.js';
import { rejectsWith } from '../helpers/assertions.js';

const exec = promisify(execFile);
const URI = 'test:///default';

interface Seed {
  volumeId: string;
  meta: Record<string, unknown>;
  user: string;
  network: { version: number; ethernets: Record<string, { match: { macaddress: string }; addresses: string[]; gateway4?: string; nameservers?: { addresses: string[] } }> };
}

async function readSeed(iso: string, into: string): Promise<Seed> {
  const pvd = (await exec('xorriso', ['-indev', iso, '-pvd_info'])).stdout;
  await exec('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract', '/', into]);
  const file = (name: string) => readFile(join(into, name), 'utf8');
  return {
    volumeId: /^Volume Id\s*:\s*(\S*)/m.exec(pvd)?.[1] ?? '',
    meta: parse(await file('meta-data')) as Record<string, unknown>,
    user: await file('user-data'),
    network: parse(await file('network-config')) as Seed['network'],
  };
}

describe('guest identity (libvirt adapter, test driver)', () => {
  let adapter: HypervisorAdapter;
  let dir: string;
  const vms: string[] = [];
  const suffix = randomBytes(3).toString('hex');

  const defineVm = async () => {
    const name = `test-ident-${randomBytes(3).toString('hex')}`;
    vms.push(name);
    await adapter.defineVm({
      name,
      memoryMiB: 128,
      vcpus: 1,
      boot: { kind: 'disk' },
      disks: [{ path: join(dir, 'vda', 'failover-fo-1.qcow2'), format: 'qcow2', target: 'vda' }],
      // The second NIC has no MAC asked for: it keeps the one libvirt gives it.
      nics: [{ network: 'default', mac: '52:54:00:00:10:01' }, { network: 'default' }],
    });
    return name;
  };

  const identity = (instanceId: string): GuestIdentity => ({
    instanceId,
    hostname: `web-dr-${suffix}`,
    nics: [
      { mac: '52:54:00:AB:00:01', network: 'default', addresses: ['192.0.2.10/24', '192.0.2.11/24'], gateway: '192.0.2.1', dns: ['192.0.2.53'] },
      { network: 'default', addresses: ['198.51.100.7/25'] },
    ],
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-identity-'));
    await mkdir(join(dir, 'vda'));
    adapter = openAdapter(URI);
    await adapter.connect();
  });

  after(async () => {
    for (const vm of vms) {
      await adapter.stop(vm, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(vm).catch(() => undefined);
    }
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('sets the NICs and attaches a seed beside the VM’s disk that holds the identity, 0600', async () => {
    const vm = await defineVm();
    const givenMac = (await adapter.getVm(vm)).nics[1]!.mac;
    const applied = await adapter.applyGuestIdentity(vm, identity(`vmdr-web-${suffix}-1`));
    const seed = join(dir, 'vda', `seed-vmdr-web-${suffix}-1.iso`);
    assert.deepEqual(applied, {
      nics: [
        { mac: '52:54:00:ab:00:01', network: 'default' },
        { mac: givenMac, network: 'default' },
      ],
      seed,
      written: true,
    });
    const info = await adapter.getVm(vm);
    assert.deepEqual(info.nics.map((n) => n.mac), ['52:54:00:ab:00:01', givenMac]);
    assert.deepEqual(info.disks.at(-1), { target: 'vdb', device: 'disk', path: seed, format: 'raw', bus: 'virtio', identitySeed: true });
    assert.equal((await stat(seed)).mode & 0o777, 0o600);

    const read = await readSeed(seed, join(dir, 'read-1'));
    assert.equal(read.volumeId, 'cidata');
    assert.deepEqual(read.meta, { 'instance-id': `vmdr-web-${suffix}-1`, 'local-hostname': `web-dr-${suffix}` });
    assert.match(read.user, /^#cloud-config\n/);
    assert.equal((parse(read.user) as { hostname: string }).hostname, `web-dr-${suffix}`);
    assert.deepEqual(read.network, {
      version: 2,
      ethernets: {
        eth0: { match: { macaddress: '52:54:00:ab:00:01' }, 'set-name': 'eth0', addresses: ['192.0.2.10/24', '192.0.2.11/24'], gateway4: '192.0.2.1', nameservers: { addresses: ['192.0.2.53'] } },
        eth1: { match: { macaddress: givenMac }, 'set-name': 'eth1', addresses: ['198.51.100.7/25'] },
      },
    });
  });

  it('the same identity again changes nothing; a seed gone or a NIC changed by hand is written again', async () => {
    const vm = await defineVm();
    const wanted = identity(`vmdr-web-${suffix}-4`);
    const first = await adapter.applyGuestIdentity(vm, wanted);
    const written = (await stat(first.seed!)).mtimeMs;
    const again = await adapter.applyGuestIdentity(vm, wanted);
    assert.deepEqual(again, { ...first, written: false });
    assert.equal((await stat(first.seed!)).mtimeMs, written, 'the seed in place was not rewritten');

    await rm(first.seed!);
    assert.equal((await adapter.applyGuestIdentity(vm, wanted)).written, true);
    await access(first.seed!);

    await adapter.setNicIdentity(vm, '52:54:00:ab:00:01', { mac: '52:54:00:ab:00:99' });
    const fixed = await adapter.applyGuestIdentity(vm, wanted);
    assert.equal(fixed.written, true);
    assert.equal(fixed.nics[0]!.mac, '52:54:00:ab:00:01');
    assert.deepEqual((await adapter.getVm(vm)).disks.filter((d) => d.identitySeed).map((d) => d.path), [first.seed]);
  });

  it('a new identity replaces the seed (the old file is deleted); removing it detaches and deletes it, NICs stay', async () => {
    const vm = await defineVm();
    const first = await adapter.applyGuestIdentity(vm, identity(`vmdr-web-${suffix}-2`));
    const second = await adapter.applyGuestIdentity(vm, { ...identity(`vmdr-web-${suffix}-3`), hostname: 'web-dr-again' });
    await assert.rejects(access(first.seed!), { code: 'ENOENT' });
    const disks = (await adapter.getVm(vm)).disks;
    assert.deepEqual(disks.filter((d) => d.identitySeed).map((d) => d.path), [second.seed]);
    assert.equal((await readSeed(second.seed!, join(dir, 'read-3'))).meta['local-hostname'], 'web-dr-again');

    await adapter.removeGuestIdentity(vm);
    await assert.rejects(access(second.seed!), { code: 'ENOENT' });
    const after = await adapter.getVm(vm);
    assert.deepEqual(after.disks.map((d) => d.target), ['vda']);
    assert.equal(after.nics[0]!.mac, '52:54:00:ab:00:01');
    await adapter.removeGuestIdentity(vm);
    const left = (await readdir(join(dir, 'vda'))).filter((f) => /-[23]\.iso/.test(f) || f.startsWith('.seed-') || f.endsWith('.tmp'));
    assert.deepEqual(left, [], 'no seed of this VM, temporary file or work directory is left');
  });

  it('refuses an identity it cannot give, naming the value, before anything changes', async () => {
    const vm = await defineVm();
    const before = await adapter.getVm(vm);
    const cases: [GuestIdentity, RegExp][] = [
      [{ ...identity('vmdr-x'), hostname: 'bad_host!' }, /identity hostname "bad_host!" is not a hostname/],
      [{ ...identity('../../etc/x') }, /instance id/],
      [{ ...identity('vmdr-x'), nics: [{ mac: 'zz:54:00:00:00:01', addresses: [] }] }, /nics\[0\]\.mac/],
      [{ ...identity('vmdr-x'), nics: [{ addresses: ['192.0.2.300/24'] }] }, /nics\[0\]\.addresses "192\.0\.2\.300\/24" is not an IPv4 address with prefix/],
      [{ ...identity('vmdr-x'), nics: [{ addresses: ['192.0.2.3/33'] }] }, /nics\[0\]\.addresses/],
      [{ ...identity('vmdr-x'), nics: [{ addresses: [], gateway: 'gw' }] }, /nics\[0\]\.gateway/],
      [{ ...identity('vmdr-x'), nics: [{ addresses: [], dns: ['1.1.1'] }] }, /nics\[0\]\.dns/],
      [{ ...identity('vmdr-x'), nics: [...identity('x').nics, { addresses: [] }] }, /3 NICs" is not at most the 2 NICs the VM has/],
    ];
    for (const [bad, message] of cases) {
      const err = await rejectsWith(adapter.applyGuestIdentity(vm, bad), 'IDENTITY_INVALID');
      assert.match(err.message, message);
      assert.equal(err.subject.vm, vm);
    }
    assert.deepEqual(await adapter.getVm(vm), before);

    await adapter.start(vm);
    await rejectsWith(adapter.applyGuestIdentity(vm, identity('vmdr-x')), 'INVALID_POWER_STATE');
    await rejectsWith(adapter.removeGuestIdentity(vm), 'INVALID_POWER_STATE');
    await adapter.stop(vm, { mode: 'force' });
    await rejectsWith(adapter.removeGuestIdentity(`test-no-such-vm-${suffix}`), 'VM_NOT_FOUND');
  });
});
