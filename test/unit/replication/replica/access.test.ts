import assert from 'node:assert/strict';
import { chmod, chown, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseImageUser } from '../../../../hypervisors/libvirt/image-user.js';
import { closeReplicas, letHypervisorReach, makeReplicaDir, reclaimImages } from '../../../../plugin/replication/replica/access.js';
import { rejectsWith } from '../../../helpers/assertions.js';

/** Runs as root, like vmdr: chown to the stand-in hypervisor user works. */
const QEMU = { uid: 64055, gid: 64055 };

describe('replica access: who may open a replica', () => {
  let root: string;
  const mode = async (f: string) => (await stat(f)).mode & 0o7777;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-access-'));
    await chmod(root, 0o755);
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('makes replica directories 0700 and the missing parents of the storage 0755, whatever the umask', async () => {
    const storage = join(root, 'srv', 'vmdr', 'replicas');
    const before = process.umask(0o077);
    try {
      await makeReplicaDir(storage, join(storage, 'web', 'vda'));
    } finally {
      process.umask(before);
    }
    assert.equal(await mode(join(root, 'srv')), 0o755);
    assert.equal(await mode(join(root, 'srv', 'vmdr')), 0o755);
    for (const d of [storage, join(storage, 'web'), join(storage, 'web', 'vda')]) assert.equal(await mode(d), 0o700, d);
  });

  it("lets only the hypervisor's group search the way to a protection's images, and closes images made before", async () => {
    const storage = join(root, 'replicas');
    const disk = join(storage, 'web', 'vda');
    await mkdir(disk, { recursive: true, mode: 0o755 });
    await writeFile(join(disk, 'point-1.qcow2'), 'customer data', { mode: 0o644 });
    await writeFile(join(storage, 'web', 'seed.iso'), 'identity', { mode: 0o644 });
    await mkdir(join(storage, 'other'), { mode: 0o700 });
    await letHypervisorReach(storage, { name: 'web' }, QEMU);
    for (const d of [storage, join(storage, 'web'), disk]) {
      const st = await stat(d);
      assert.deepEqual([st.mode & 0o7777, st.uid, st.gid], [0o710, 0, QEMU.gid], d);
    }
    assert.equal(await mode(join(disk, 'point-1.qcow2')), 0o600);
    assert.equal(await mode(join(storage, 'web', 'seed.iso')), 0o600);
    assert.equal(await mode(join(storage, 'other')), 0o700, "another protection's directory stays closed");
    await letHypervisorReach(storage, { name: 'web' }, undefined); // no local hypervisor user: nothing changes
    assert.equal(await mode(storage), 0o710);
  });

  it("lets the hypervisor's group through tenants/ and the tenant's directory to a tenant's replica, and no further", async () => {
    const storage = join(root, 'replicas');
    const disk = join(storage, 'tenants', 'acme', 'web', 'vda');
    await makeReplicaDir(storage, disk);
    await writeFile(join(disk, 'point-1.qcow2'), 'customer data', { mode: 0o600 });
    await makeReplicaDir(storage, join(storage, 'tenants', 'acme', 'db', 'vda'));
    await makeReplicaDir(storage, join(storage, 'tenants', 'bravo', 'app'));
    await letHypervisorReach(storage, { name: 'web', tenant: 'acme' }, QEMU);
    for (const d of [storage, join(storage, 'tenants'), join(storage, 'tenants', 'acme'), join(storage, 'tenants', 'acme', 'web'), disk]) {
      const st = await stat(d);
      assert.deepEqual([st.mode & 0o7777, st.gid], [0o710, QEMU.gid], d);
    }
    assert.equal(await mode(join(disk, 'point-1.qcow2')), 0o600);
    for (const d of [join(storage, 'tenants', 'acme', 'db'), join(storage, 'tenants', 'bravo')]) assert.equal(await mode(d), 0o700, `${d} stays closed`);
    // Closing at the receiver's start narrows the tenants' directories and replicas too.
    await chmod(join(storage, 'tenants', 'bravo'), 0o755);
    await writeFile(join(storage, 'tenants', 'bravo', 'app', 'console.log'), 'guest output', { mode: 0o644 });
    await closeReplicas(storage);
    assert.equal(await mode(join(storage, 'tenants', 'bravo')), 0o710);
    assert.equal(await mode(join(storage, 'tenants', 'bravo', 'app', 'console.log')), 0o600);
  });

  it('refuses, naming it, a directory above the storage the hypervisor cannot pass through', async () => {
    const closed = join(root, 'closed');
    await mkdir(closed, { mode: 0o700 });
    const err = await rejectsWith(letHypervisorReach(join(closed, 'replicas'), { name: 'web' }, QEMU), 'STORAGE_UNREACHABLE');
    assert.equal(err.subject.file, closed);
    assert.match(err.message, new RegExp(`cannot pass through ${closed} to reach site storage ${closed}/replicas`));
  });

  it('closes a replica written before these rules when the receiver starts (0644 images in 0755 directories)', async () => {
    const storage = join(root, 'replicas');
    const disk = join(storage, 'web', 'vda');
    await mkdir(disk, { recursive: true, mode: 0o755 });
    await chmod(storage, 0o755);
    await writeFile(join(disk, 'point-1.qcow2'), 'customer data', { mode: 0o644 });
    await writeFile(join(storage, 'web', 'console.log'), 'guest output', { mode: 0o640 });
    await closeReplicas(storage);
    for (const d of [storage, join(storage, 'web'), disk]) assert.equal(await mode(d), 0o710, d);
    assert.equal(await mode(join(disk, 'point-1.qcow2')), 0o600);
    assert.equal(await mode(join(storage, 'web', 'console.log')), 0o600);
    await closeReplicas(join(root, 'none')); // a site that has received nothing yet
  });

  it('takes back the images libvirt left owned by the hypervisor user', async () => {
    const storage = join(root, 'replicas');
    const disk = join(storage, 'web', 'vda');
    await makeReplicaDir(storage, disk);
    for (const f of ['base.qcow2', 'point-1.qcow2']) {
      await writeFile(join(disk, f), 'x', { mode: 0o600 });
      await chown(join(disk, f), QEMU.uid, QEMU.gid);
    }
    await reclaimImages(storage, { name: 'web' });
    for (const f of ['base.qcow2', 'point-1.qcow2']) {
      const st = await stat(join(disk, f));
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [0, 0, 0o600], f);
    }
  });

  it("reads QEMU's user from libvirt's capabilities (the DAC base label)", () => {
    const caps = (labels: string) => `<capabilities><host><secmodel><model>none</model><doi>0</doi></secmodel>
      <secmodel><model>dac</model><doi>0</doi>${labels}</secmodel></host></capabilities>`;
    assert.deepEqual(parseImageUser(caps("<baselabel type='kvm'>+64055:+64055</baselabel><baselabel type='qemu'>+107:+108</baselabel>")), { uid: 107, gid: 108 });
    assert.deepEqual(parseImageUser(caps("<baselabel type='kvm'>+0:+0</baselabel>")), { uid: 0, gid: 0 });
    assert.equal(parseImageUser('<capabilities><host/></capabilities>'), undefined);
    assert.equal(parseImageUser('not xml <'), undefined);
  });
});
