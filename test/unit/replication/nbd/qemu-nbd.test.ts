import assert from 'node:assert/strict';
import { join } from 'node:path';
import { NbdClient, STATE_HOLE, STATE_ZERO } from '../../../../plugin/replication/nbd/client.js';
import { exec, nbdinfoMap, qemuNbd, scratchDir, type NbdServer } from '../../../helpers/nbd-servers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** 64 distinct 64 KiB patterns from here on, for the many-requests test. */
const PATTERNS_AT = 100 * MiB;


/** qemu-io's own pattern check on the image file: exit code 0 means the bytes are there. */
async function imageHasPattern(image: string, format: string, pattern: number, offset: number, length: number): Promise<boolean> {
  // -U: qemu-nbd holds the image's write lock; the data was flushed before we look.
  return exec('qemu-io', ['-r', '-U', '-f', format, '-c', `read -P ${pattern} ${offset} ${length}`, image]).then(() => true, () => false);
}

describe('NBD client against qemu-nbd (qcow2, unix socket)', function () {
  this.timeout(30_000);
  let scratch: Awaited<ReturnType<typeof scratchDir>>;
  let image: string;
  let server: NbdServer;
  let client: NbdClient;

  before(async () => {
    scratch = await scratchDir('qcow2');
    image = join(scratch.dir, 'disk.qcow2');
    await exec('qemu-img', ['create', '-f', 'qcow2', image, String(128 * MiB)]);
    const writes = ['write -P 0xcd 1M 64k'];
    for (let i = 0; i < 64; i++) writes.push(`write -P ${i + 1} ${PATTERNS_AT + i * 64 * KiB} 64k`);
    await exec('qemu-io', ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), image]);
    server = await qemuNbd(image);
    client = await NbdClient.connect(server.listen, { exportName: '', metaContexts: ['base:allocation'] });
  });

  after(async () => {
    client?.destroy();
    await server?.stop();
    await scratch?.remove();
  });

  it('reports the size, flags, block size and negotiated contexts', () => {
    assert.equal(client.size, 128 * MiB);
    assert.equal(client.exportName, '');
    assert.equal(client.readOnly, false);
    assert.ok(client.canFlush && client.canTrim && client.canWriteZeroes && client.canFua);
    assert.equal(client.maxBlockSize, 32 * MiB);
    assert.ok(client.hasMetaContext('base:allocation'));
    assert.ok(!client.hasMetaContext('qemu:dirty-bitmap:nope'));
  });

  it('reads the pattern qemu-io wrote, and the holes around it as zeroes', async () => {
    const bytes = await client.read(MiB - 4 * KiB, 64 * KiB + 8 * KiB);
    assert.ok(bytes.subarray(0, 4 * KiB).equals(Buffer.alloc(4 * KiB)));
    assert.ok(bytes.subarray(4 * KiB, 68 * KiB).equals(Buffer.alloc(64 * KiB, 0xcd)));
    assert.ok(bytes.subarray(68 * KiB).equals(Buffer.alloc(4 * KiB)));
  });

  it('answers base:allocation exactly as nbdinfo --map does', async () => {
    const extents = await client.extents('base:allocation');
    assert.deepEqual(extents, await nbdinfoMap(server.uri));
    assert.deepEqual(extents[1], { offset: MiB, length: 64 * KiB, flags: 0 });
    assert.deepEqual(await client.extents('base:allocation', MiB + 4 * KiB, 8 * KiB), [{ offset: MiB + 4 * KiB, length: 8 * KiB, flags: 0 }]);
  });

  it('keeps 64 requests in flight and matches every reply to its request', async () => {
    const order = Array.from({ length: 64 }, (_, i) => (i * 37) % 64);
    const reads = order.map((i) => client.read(PATTERNS_AT + i * 64 * KiB, 64 * KiB));
    const results = await Promise.all(reads);
    order.forEach((i, n) => assert.ok(results[n]!.equals(Buffer.alloc(64 * KiB, i + 1)), `request for pattern ${i + 1}`));
  });

  it('splits a read bigger than maxBlockSize and returns the same bytes as nbdcopy', async () => {
    const { stdout } = await exec('nbdcopy', ['--', server.uri, '-'], { encoding: 'buffer', maxBuffer: 256 * MiB });
    const whole = await client.read(0, client.size);
    assert.ok(whole.equals(stdout as Buffer));
    const offset = MiB + 3;
    const part = await client.read(offset, 40 * MiB + 5);
    assert.ok(part.equals((stdout as Buffer).subarray(offset, offset + 40 * MiB + 5)));
  });

  it('writes (with FUA), flushes, and the image file holds the data', async () => {
    await client.write(16 * MiB + 512, Buffer.alloc(MiB, 0xab), { fua: true });
    // Bigger than maxBlockSize: sent as two requests.
    await client.write(48 * MiB, Buffer.alloc(33 * MiB + 7, 0x5c));
    await client.flush();
    assert.ok(await imageHasPattern(image, 'qcow2', 0xab, 16 * MiB + 512, MiB));
    assert.ok(await imageHasPattern(image, 'qcow2', 0x5c, 48 * MiB, 33 * MiB + 7));
    assert.ok(!(await imageHasPattern(image, 'qcow2', 0xab, 16 * MiB, 512)), 'the check itself must fail on other bytes');
    assert.ok((await client.read(16 * MiB + 512, MiB)).equals(Buffer.alloc(MiB, 0xab)));
  });

  it('write-zeroes over data reads back zeroes and shows ZERO in base:allocation', async () => {
    await client.write(20 * MiB, Buffer.alloc(256 * KiB, 0x5a));
    assert.equal((await client.extents('base:allocation', 20 * MiB, 256 * KiB))[0]!.flags & STATE_ZERO, 0);
    await client.writeZeroes(20 * MiB, 256 * KiB);
    assert.ok((await client.read(20 * MiB, 256 * KiB)).equals(Buffer.alloc(256 * KiB)));
    const extents = await client.extents('base:allocation', 20 * MiB, 256 * KiB);
    assert.ok(extents.every((e) => e.flags & STATE_ZERO), JSON.stringify(extents));
    assert.equal(extents.reduce((sum, e) => sum + e.length, 0), 256 * KiB);

    await client.writeZeroes(21 * MiB, 128 * KiB, { noHole: true, fua: true });
    await client.flush();
    assert.ok(await imageHasPattern(image, 'qcow2', 0, 20 * MiB, 256 * KiB));
  });

  it('trims: the range no longer holds data', async () => {
    await client.write(24 * MiB, Buffer.alloc(MiB, 0x33));
    await client.trim(24 * MiB, MiB);
    await client.flush();
    const extents = await client.extents('base:allocation', 24 * MiB, MiB);
    assert.deepEqual(extents, [{ offset: 24 * MiB, length: MiB, flags: STATE_HOLE | STATE_ZERO }]);
  });

  it('refuses ranges outside the export before sending anything', async () => {
    await assert.rejects(client.read(client.size - 10, 11), RangeError);
    await assert.rejects(client.extents('base:allocation', -1, 10), RangeError);
    assert.equal((await client.read(client.size - 10, 10)).length, 10);
  });
});

describe('NBD client against qemu-nbd (raw, TCP, size not a multiple of 64 KiB)', function () {
  this.timeout(30_000);
  const written = 8 * MiB + 513;
  let scratch: Awaited<ReturnType<typeof scratchDir>>;
  let image: string;
  let server: NbdServer;
  let client: NbdClient;
  let size: number;

  before(async () => {
    scratch = await scratchDir('raw');
    image = join(scratch.dir, 'disk.raw');
    await exec('qemu-img', ['create', '-f', 'raw', image, String(written)]);
    await exec('qemu-io', ['-f', 'raw', '-c', `write -P 0x77 ${8 * MiB} 513`, image]);
    server = await qemuNbd(image, { format: 'raw', transport: 'tcp', exportName: 'vmdr-odd' });
    client = await NbdClient.connect(server.listen, { exportName: 'vmdr-odd', metaContexts: ['base:allocation'] });
    // QEMU sizes raw images in 512-byte sectors: the export is 8 MiB + 1 KiB. nbdkit serves byte sizes (nbdkit suite).
    size = Number((await exec('nbdinfo', ['--size', server.uri])).stdout);
  });

  after(async () => {
    client?.destroy();
    await server?.stop();
    await scratch?.remove();
  });

  it('reads the last bytes of the export', async () => {
    assert.equal(client.size, size);
    assert.ok(size >= written && size % (64 * KiB) !== 0);
    assert.equal(client.exportName, 'vmdr-odd');
    const from = 8 * MiB - 100;
    const tail = await client.read(from, size - from);
    const expected = Buffer.alloc(size - from);
    expected.fill(0x77, 100, 100 + 513);
    assert.ok(tail.equals(expected));
  });

  it('covers the whole export with extents that match nbdinfo', async () => {
    const extents = await client.extents('base:allocation');
    assert.equal(extents.at(-1)!.offset + extents.at(-1)!.length, size);
    assert.deepEqual(extents, await nbdinfoMap(server.uri));
  });

  it('writes the last byte and closes cleanly, twice', async () => {
    await client.write(written - 1, Buffer.from([0x42]));
    await client.flush();
    assert.ok(await imageHasPattern(image, 'raw', 0x42, written - 1, 1));
    await Promise.all([client.close(), client.close()]);
    await client.close();
    await assert.rejects(client.read(0, 1), (err: Error & { code?: string }) => err.code === 'NBD_CONNECTION_CLOSED');
  });
});
