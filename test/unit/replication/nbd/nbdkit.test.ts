import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdClient } from '../../../../plugin/replication/nbd/client.js';
import { NbdServerError } from '../../../../plugin/replication/nbd/errors.js';
import { rejectsWith } from '../../../helpers/assertions.js';
import { exec, nbdkit, qemuNbd, scratchDir, type NbdServer } from '../../../helpers/nbd-servers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('NBD client against nbdkit', function () {
  this.timeout(30_000);
  let scratch: Awaited<ReturnType<typeof scratchDir>>;
  const servers: NbdServer[] = [];
  const clients: NbdClient[] = [];
  const serve = async (args: string[], options?: Parameters<typeof nbdkit>[1]) => {
    const server = await nbdkit(args, options);
    servers.push(server);
    return server;
  };
  const open = async (server: NbdServer, options: Partial<Parameters<typeof NbdClient.connect>[1]> = {}) => {
    const client = await NbdClient.connect(server.listen, { exportName: '', ...options });
    clients.push(client);
    return client;
  };

  before(async () => {
    scratch = await scratchDir('nbdkit');
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) client.destroy();
    await Promise.all(servers.splice(0).map((server) => server.stop()));
  });

  after(() => scratch?.remove());

  it('surfaces an error reply as NBD_SERVER_ERROR with its errno, and the connection stays usable', async () => {
    const switchFile = join(scratch.dir, 'fail-reads');
    const server = await serve(['--filter=error', 'memory', '64M', 'error-pread=EIO', 'error-pread-rate=1', `error-pread-file=${switchFile}`]);
    const client = await open(server);
    await client.write(MiB, Buffer.alloc(64 * KiB, 0x61));

    await writeFile(switchFile, '');
    const err = await rejectsWith(client.read(MiB, 64 * KiB), 'NBD_SERVER_ERROR');
    assert.ok(err instanceof NbdServerError);
    assert.equal(err.errno, 'EIO');
    assert.deepEqual([err.subject.errno, err.subject.command, err.subject.offset], ['EIO', 'read', MiB]);

    await rm(switchFile);
    assert.ok((await client.read(MiB, 64 * KiB)).equals(Buffer.alloc(64 * KiB, 0x61)));
  });

  it('names the errno of failed writes and trims (ENOSPC, EPERM)', async () => {
    const server = await serve(['--filter=error', 'memory', '16M', 'error-pwrite=ENOSPC', 'error-pwrite-rate=1', 'error-trim=EPERM', 'error-trim-rate=1']);
    const client = await open(server);
    const full = await rejectsWith(client.write(4 * KiB, Buffer.alloc(4 * KiB, 1)), 'NBD_SERVER_ERROR');
    assert.deepEqual([full.subject.errno, full.subject.command, full.subject.offset], ['ENOSPC', 'write', 4 * KiB]);
    const denied = await rejectsWith(client.trim(0, MiB), 'NBD_SERVER_ERROR');
    assert.deepEqual([denied.subject.errno, denied.subject.command], ['EPERM', 'trim']);
    await client.writeZeroes(0, MiB);
  });

  it('refuses to write, zero or trim a read-only export', async () => {
    const server = await serve(['-r', 'memory', '1M']);
    const client = await open(server);
    assert.equal(client.readOnly, true);
    const err = await rejectsWith(client.write(0, Buffer.alloc(512)), 'NBD_UNSUPPORTED');
    assert.match(err.message, /read-only/);
    await rejectsWith(client.writeZeroes(0, 512), 'NBD_UNSUPPORTED');
    await rejectsWith(client.trim(0, 512), 'NBD_UNSUPPORTED');
    assert.ok((await client.read(0, 512)).equals(Buffer.alloc(512)));
  });

  it('names the export the server does not have', async () => {
    const server = await serve(['--filter=exportname', 'memory', '1M', 'exportname-strict=true', 'exportname=vmdr-a'], { exportName: 'vmdr-a' });
    assert.equal((await open(server, { exportName: 'vmdr-a' })).size, MiB);
    const err = await rejectsWith(NbdClient.connect(server.listen, { exportName: 'vmdr-b' }), 'NBD_EXPORT_NOT_FOUND');
    assert.equal(err.subject.export, 'vmdr-b');
    assert.match(err.message, /"vmdr-b"/);
  });

  it('names the export qemu-nbd does not have, with or without meta contexts', async () => {
    const image = join(scratch.dir, 'named.qcow2');
    await exec('qemu-img', ['create', '-f', 'qcow2', image, '1M']);
    const server = await qemuNbd(image, { exportName: 'vmdr-disk' });
    servers.push(server);
    await rejectsWith(NbdClient.connect(server.listen, { exportName: 'vmdr-nope' }), 'NBD_EXPORT_NOT_FOUND');
    const err = await rejectsWith(NbdClient.connect(server.listen, { exportName: 'vmdr-nope', metaContexts: ['base:allocation'] }), 'NBD_EXPORT_NOT_FOUND');
    assert.equal(err.subject.export, 'vmdr-nope');
  });

  it('refuses a meta context the server does not offer, naming it', async () => {
    const server = await serve(['memory', '1M']);
    const err = await rejectsWith(
      NbdClient.connect(server.listen, { exportName: '', metaContexts: ['base:allocation', 'qemu:dirty-bitmap:vmdr-missing'] }),
      'NBD_META_CONTEXT_UNAVAILABLE',
    );
    assert.equal(err.subject.context, 'qemu:dirty-bitmap:vmdr-missing');
    assert.match(err.message, /qemu:dirty-bitmap:vmdr-missing/);
    const client = await open(server, { metaContexts: ['base:allocation'] });
    await rejectsWith(client.extents('qemu:dirty-bitmap:vmdr-missing'), 'NBD_META_CONTEXT_UNAVAILABLE');
  });

  it('reads block status and data of a sparse export, byte-sized', async () => {
    const size = 8 * MiB + 513;
    const server = await serve(['memory', String(size)]);
    const client = await open(server, { metaContexts: ['base:allocation'] });
    assert.equal(client.size, size);
    await client.write(size - 513, Buffer.alloc(513, 0x7e));
    await client.write(2 * MiB, Buffer.alloc(MiB, 0x10));
    const extents = await client.extents('base:allocation');
    assert.equal(extents.reduce((sum, e) => sum + e.length, 0), size);
    assert.ok(extents.some((e) => e.offset <= 2 * MiB && e.offset + e.length >= 3 * MiB && e.flags === 0), JSON.stringify(extents));
    assert.ok((await client.read(size - 513, 513)).equals(Buffer.alloc(513, 0x7e)));
    await client.writeZeroes(2 * MiB, MiB);
    assert.ok((await client.read(2 * MiB, MiB)).equals(Buffer.alloc(MiB)));
    await client.trim(0, MiB);
    await client.flush();
    await client.close();
  });

  it('refuses an oldstyle server with NBD_UNSUPPORTED', async () => {
    const server = await serve(['-o', 'memory', '1M']);
    const err = await rejectsWith(NbdClient.connect(server.listen, { exportName: '' }), 'NBD_UNSUPPORTED');
    assert.match(err.message, /oldstyle/);
  });
});
