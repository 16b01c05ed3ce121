/**
 * A recovery point's disks materialized on a vSphere datastore (hypervisors/vsphere/boot-disks.ts)
 * against govmomi's simulator (real SOAP and datastore HTTP over TLS on loopback) with a real
 * qcow2 chain made by qemu-img and qemu-io. What a user would check: the bytes on the datastore
 * are the replica's bytes, a boot's disk is kept once whole, a half upload is not, a release
 * removes exactly that boot's files, and the point's images are never written.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { PointDisk } from '../../hypervisors/types.js';
import { materializedFiles, materializePoint, removeMaterialized, type DiskPlace } from '../../hypervisors/vsphere/boot-disks.js';
import { datastorePath, readSmallFile, statFile, type DatastoreFile } from '../../hypervisors/vsphere/datastore.js';
import { parseVsphereUri } from '../../hypervisors/vsphere/endpoint.js';
import { retrieve } from '../../hypervisors/vsphere/property-collector.js';
import { VsphereSession } from '../../hypervisors/vsphere/session.js';
import { parseVmdkDescriptor } from '../../hypervisors/vsphere/vmdk.js';
import { assertProgress, rejectsWith, type ProgressEvent } from '../helpers/assertions.js';
import { runningChildren } from '../helpers/children.js';
import { startVcsim, type Vcsim } from '../helpers/vcsim.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const PASSWORD_ENV = 'VMDR_TEST_VSPHERE_DISKS_PASSWORD';

const sha256 = async (stream: Readable): Promise<string> => {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
};

describe('vSphere boot disks: a recovery point as flat VMDKs on a datastore (govmomi simulator, qemu-img)', function () {
  this.timeout(120_000);
  let vcsim: Vcsim;
  let session: VsphereSession;
  let dir: string;
  /** The simulator's datastore LocalDS_0 is a directory on this machine: where a guest's writes would land. */
  let datastoreDir: string;
  let vda: PointDisk;
  let vdb: PointDisk;
  /** What the replica holds, as a user would check it: `qemu-img convert -O raw` of each chain. */
  const expected = new Map<string, string>();
  const imageHashes = new Map<string, string>();
  const place: DiskPlace = { datacenter: 'DC0', datastore: 'LocalDS_0', folder: 'vmdr/test-target' };

  const qemuIo = (image: string, command: string) => exec('qemu-io', ['-f', 'qcow2', '-c', command, image]);
  const hashFile = (path: string) => sha256(createReadStream(path));
  const download = async (file: DatastoreFile): Promise<string> => {
    const response = await session.transfer.get<Readable>(`/folder/${file.path}`, {
      params: { dcPath: file.datacenter, dsName: file.datastore },
      responseType: 'stream',
      maxContentLength: Infinity,
    });
    return sha256(response.data);
  };
  const localPath = (file: DatastoreFile) => join(datastoreDir, file.path);
  const readers = () => runningChildren(['qemu-nbd', 'nbdcopy']);

  before(async () => {
    vcsim = await startVcsim();
    process.env[PASSWORD_ENV] = vcsim.password;
    session = await VsphereSession.open(parseVsphereUri(vcsim.uri(), { passwordEnv: PASSWORD_ENV }));
    const stores = await retrieve(session, { type: 'Datastore', paths: ['name', 'info.url'] });
    datastoreDir = String(stores.find((s) => s.props.name === place.datastore)!.props['info.url']);

    dir = await mkdtemp(join(tmpdir(), 'vmdr-vsphere-disks-'));
    // vda: a chain of two images, as the replica keeps it: a base and a committed overlay whose
    // writes overlap the base's, and a range far out that only the overlay has.
    const base = join(dir, 'vda-base.qcow2');
    const top = join(dir, 'vda-point.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(64 * MiB)]);
    await qemuIo(base, 'write -P 0x11 0 8M');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'vda-base.qcow2', '-F', 'qcow2', top], { cwd: dir });
    await qemuIo(top, 'write -P 0x22 4M 8M');
    await qemuIo(top, 'write -P 0x33 60M 1M');
    vda = { target: 'vda', image: top, sizeBytes: 64 * MiB };
    // vdb: one image whose disk is larger than the image (it grew after the point): zeros past its end.
    const single = join(dir, 'vdb-point.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', single, String(4 * MiB)]);
    await qemuIo(single, 'write -P 0x44 1M 1M');
    vdb = { target: 'vdb', image: single, sizeBytes: 6 * MiB };

    for (const disk of [vda, vdb]) {
      const raw = join(dir, `${disk.target}.raw`);
      await exec('qemu-img', ['convert', '-O', 'raw', disk.image, raw]);
      // The replica's bytes, then zeros up to the disk's size.
      await exec('truncate', ['-s', String(disk.sizeBytes), raw]);
      expected.set(disk.target, await hashFile(raw));
      await rm(raw);
    }
    for (const image of [base, top, single]) imageHashes.set(image, await hashFile(image));
  });

  after(async () => {
    await session?.logout().catch(() => undefined);
    delete process.env[PASSWORD_ENV];
    await vcsim?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("materializes each disk as a flat VMDK whose bytes are the replica's, reporting bytes up to done === total", async () => {
    const events: ProgressEvent[] = [];
    const disks = await materializePoint(session, place, { boot: 'failover-1', disks: [vda, vdb] }, { onProgress: (p) => events.push(p) });
    assert.deepEqual(disks, [
      { target: 'vda', path: '[LocalDS_0] vmdr/test-target/failover-1-vda.vmdk', format: 'vmdk' },
      { target: 'vdb', path: '[LocalDS_0] vmdr/test-target/failover-1-vdb.vmdk', format: 'vmdk' },
    ]);
    for (const disk of [vda, vdb]) {
      const files = materializedFiles(place, 'failover-1', disk);
      assert.equal(await download(files.extent), expected.get(disk.target), `${disk.target}: the datastore's bytes are the point's`);
      const descriptor = parseVmdkDescriptor((await readSmallFile(session, files.descriptor))!);
      assert.equal(descriptor?.createType, 'vmfs');
      assert.deepEqual(descriptor?.extents, [{ access: 'RW', sectors: disk.sizeBytes / 512, type: 'VMFS', file: `failover-1-${disk.target}-flat.vmdk` }]);
      assert.equal((await statFile(session, files.extent))?.sizeBytes, disk.sizeBytes, "the extent is the descriptor's size");
      assert.equal(await statFile(session, files.part), undefined, 'no temporary descriptor is left');
    }

    const uploads = assertProgress(events, ['upload disk']);
    for (const disk of [vda, vdb]) {
      const of = uploads.filter((e) => e.subject?.disk === disk.target);
      assert.ok(of.length > 2, `${disk.target}: progress while it uploads`);
      assert.ok(of.every((e) => e.unit === 'bytes' && e.total === disk.sizeBytes));
      assert.ok(of.every((e, i) => i === 0 || e.done >= of[i - 1]!.done), 'done never goes back');
      assert.equal(of.at(-1)!.done, disk.sizeBytes);
    }
  });

  it('keeps what exists for the boot, with what a guest wrote into it: no second upload', async () => {
    const files = materializedFiles(place, 'failover-1', vda);
    // A guest that ran on the disk wrote into its extent.
    const handle = await open(localPath(files.extent), 'r+');
    await handle.write(Buffer.alloc(4096, 0x5a), 0, 4096, 32 * MiB);
    await handle.close();
    const before = await stat(localPath(files.extent));
    const written = await download(files.extent);

    const events: ProgressEvent[] = [];
    const disks = await materializePoint(session, place, { boot: 'failover-1', disks: [vda, vdb] }, { onProgress: (p) => events.push(p) });
    assert.deepEqual(disks.map((d) => d.path), ['[LocalDS_0] vmdr/test-target/failover-1-vda.vmdk', '[LocalDS_0] vmdr/test-target/failover-1-vdb.vmdk']);
    assert.deepEqual(events, [], 'nothing was uploaded');
    assert.equal((await stat(localPath(files.extent))).mtimeMs, before.mtimeMs, 'the extent was not written');
    assert.equal(await download(files.extent), written, "the guest's write is still there");
  });

  it('does not take a half upload for a whole one: the next call uploads again and the bytes are right', async () => {
    const boot = 'failover-2';
    const files = materializedFiles(place, boot, vda);
    const controller = new AbortController();
    const aborted = new Error('test: stop the upload half way');
    let seen = 0;
    await assert.rejects(
      materializePoint(session, place, { boot, disks: [vda] }, {
        signal: controller.signal,
        onProgress: (p) => {
          seen = p.done;
          if (p.done >= 16 * MiB && p.done < p.total) controller.abort(aborted);
        },
      }),
      (err) => err === aborted,
    );
    assert.ok(seen > 0 && seen < vda.sizeBytes, `aborted half way (${seen} bytes)`);
    assert.equal(await statFile(session, files.descriptor), undefined, 'no descriptor: the disk is not taken as whole');
    assert.deepEqual(await readers(), [], 'the abort ended qemu-nbd and nbdcopy');
    const half = await statFile(session, files.extent);
    assert.ok(half === undefined || (half.sizeBytes !== undefined && half.sizeBytes < vda.sizeBytes), `a partial extent at most (${half?.sizeBytes} bytes)`);

    const events: ProgressEvent[] = [];
    await materializePoint(session, place, { boot, disks: [vda] }, { onProgress: (p) => events.push(p) });
    assertProgress(events, ['upload disk']);
    assert.equal(await download(files.extent), expected.get('vda'));
    assert.ok(await statFile(session, files.descriptor));
  });

  it('removes exactly the files of that boot, and a second removal is fine; the point was never written', async () => {
    const other = materializedFiles(place, 'failover-2', vda);
    await removeMaterialized(session, place, { boot: 'failover-1', disks: [vda, vdb] });
    for (const disk of [vda, vdb]) {
      const files = materializedFiles(place, 'failover-1', disk);
      for (const file of [files.descriptor, files.extent, files.part]) assert.equal(await statFile(session, file), undefined, `${datastorePath(file)} is gone`);
    }
    assert.ok(await statFile(session, other.descriptor), "another boot's disk stays");
    await removeMaterialized(session, place, { boot: 'failover-1', disks: [vda, vdb] });
    await removeMaterialized(session, place, { boot: 'failover-2', disks: [vda] });
    assert.equal(await statFile(session, other.extent), undefined);

    for (const [image, hash] of imageHashes) assert.equal(await hashFile(image), hash, `${image} is byte for byte what it was`);
  });

  it("puts a boot's disks in a folder that does not exist yet, or at the datastore's root; a target like scsi0:1 is named scsi0_1", async () => {
    const disk = { ...vdb, target: 'scsi0:1' };
    for (const folder of ['vmdr/new folder/deeper', '']) {
      const at = { ...place, folder };
      const [made] = await materializePoint(session, at, { boot: 'drill-7', disks: [disk] });
      assert.equal(made!.path, `[LocalDS_0] ${folder ? `${folder}/` : ''}drill-7-scsi0_1.vmdk`);
      assert.equal(await download(materializedFiles(at, 'drill-7', disk).extent), expected.get('vdb'));
      await removeMaterialized(session, at, { boot: 'drill-7', disks: [disk] });
      assert.equal(await statFile(session, materializedFiles(at, 'drill-7', disk).descriptor), undefined);
    }
  });

  it('names a datastore the datacenter lacks, and a boot name that is no file name, before reading anything', async () => {
    const err = await rejectsWith(materializePoint(session, { ...place, datastore: 'NoSuchDS' }, { boot: 'failover-3', disks: [vda] }), 'VSPHERE_OBJECT_NOT_FOUND');
    assert.match(err.message, /datastore "NoSuchDS"/);
    await rejectsWith(removeMaterialized(session, { ...place, datastore: 'NoSuchDS' }, { boot: 'failover-3', disks: [vda] }), 'VSPHERE_OBJECT_NOT_FOUND');
    await rejectsWith(materializePoint(session, place, { boot: '../etc', disks: [vda] }), 'BOOT_NAME_INVALID');
  });

  it('says which point image it could not read, and leaves no disk that would be taken as whole', async () => {
    const missing = { ...vdb, image: join(dir, 'gone.qcow2') };
    const err = await rejectsWith(materializePoint(session, place, { boot: 'failover-4', disks: [missing] }), 'IMAGE_OPERATION_FAILED');
    assert.ok(err.message.includes(missing.image), err.message);
    assert.equal(await statFile(session, materializedFiles(place, 'failover-4', missing).descriptor), undefined);
    assert.deepEqual(await readers(), []);
  });
});
