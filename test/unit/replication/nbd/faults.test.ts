import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { NbdClient } from '../../../../plugin/replication/nbd/client.js';
import { rejectsWith } from '../../../helpers/assertions.js';
import { corruptingProxy, cuttingProxy, exec, freePort, nbdkit, qemuNbd, scratchDir, type NbdServer } from '../../../helpers/nbd-servers.js';

const MiB = 1024 * 1024;

/** A TCP listener that accepts and then says `greeting` (or nothing): not an NBD server. */
async function listener(greeting?: Buffer): Promise<{ port: number; stop: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    if (greeting) socket.end(greeting);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('NBD client faults', function () {
  this.timeout(30_000);
  let scratch: Awaited<ReturnType<typeof scratchDir>>;
  let image: string;
  const cleanups: (() => Promise<void> | void)[] = [];

  before(async () => {
    scratch = await scratchDir('faults');
    image = join(scratch.dir, 'full.qcow2');
    await exec('qemu-img', ['create', '-f', 'qcow2', image, String(64 * MiB)]);
    await exec('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x11 0 ${64 * MiB}`, image]);
  });

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  after(() => scratch?.remove());

  const serveImage = async (): Promise<NbdServer> => {
    const server = await qemuNbd(image, { transport: 'tcp' });
    cleanups.push(() => server.stop());
    return server;
  };

  it('rejects every pending request with NBD_CONNECTION_CLOSED when the connection is cut mid-reply', async () => {
    const server = await serveImage();
    // The handshake is a few hundred bytes; 6 MiB lands inside the payload of the second 4 MiB read.
    const proxy = await cuttingProxy(server.listen, 6 * MiB);
    cleanups.push(() => proxy.stop());
    const client = await NbdClient.connect(proxy.listen, { exportName: '' });
    cleanups.push(() => client.destroy());
    const reads = Array.from({ length: 8 }, (_, i) => client.read(i * 4 * MiB, 4 * MiB));
    const settled = await Promise.allSettled(reads);
    assert.equal(proxy.cuts, 1);
    // 6 MiB of replies hold at most one whole 4 MiB read; the server may answer in any order.
    const done = settled.filter((r): r is PromiseFulfilledResult<Buffer> => r.status === 'fulfilled');
    const failed = settled.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.ok(done.length <= 1);
    for (const { value } of done) assert.ok(value.equals(Buffer.alloc(4 * MiB, 0x11)));
    assert.deepEqual(new Set(failed.map((r) => r.reason.code)), new Set(['NBD_CONNECTION_CLOSED']));
    assert.match(failed[0]!.reason.message, /middle of a reply/);
    await rejectsWith(client.read(0, 512), 'NBD_CONNECTION_CLOSED');
    await client.close();
  });

  it('drops the connection with NBD_PROTOCOL_ERROR when a reply is malformed', async () => {
    const server = await serveImage();
    const proxy = await corruptingProxy(server.listen);
    cleanups.push(() => proxy.stop());
    const client = await NbdClient.connect(proxy.listen, { exportName: '' });
    cleanups.push(() => client.destroy());
    const [first, second] = await Promise.allSettled([client.read(0, MiB), client.read(MiB, MiB)]);
    for (const result of [first, second]) {
      assert.equal(result!.status, 'rejected');
      assert.equal((result as PromiseRejectedResult).reason.code, 'NBD_PROTOCOL_ERROR');
    }
    assert.match((first as PromiseRejectedResult).reason.message, /bad reply magic/);
    await rejectsWith(client.read(0, 512), 'NBD_PROTOCOL_ERROR');
  });

  it('rejects pending requests when the server process dies', async () => {
    const server = await nbdkit(['--filter=delay', 'memory', '16M', 'rdelay=5']);
    cleanups.push(() => server.stop());
    const client = await NbdClient.connect(server.listen, { exportName: '' });
    cleanups.push(() => client.destroy());
    const failed = rejectsWith(client.read(0, MiB), 'NBD_CONNECTION_CLOSED');
    await server.stop('SIGKILL');
    const err = await failed;
    assert.match(err.message, /1 requests pending/);
  });

  it('disconnects after the server answers ESHUTDOWN, as the protocol requires', async () => {
    const server = await nbdkit(['--filter=error', 'memory', '16M', 'error-pread=ESHUTDOWN', 'error-pread-rate=1']);
    cleanups.push(() => server.stop());
    const client = await NbdClient.connect(server.listen, { exportName: '' });
    cleanups.push(() => client.destroy());
    const err = await rejectsWith(client.read(0, MiB), 'NBD_SERVER_ERROR');
    assert.equal(err.subject.errno, 'ESHUTDOWN');
    await rejectsWith(client.read(0, MiB), 'NBD_CONNECTION_CLOSED');
    await client.close();
  });

  it('destroy() rejects pending requests at once; close() waits for them', async () => {
    const server = await serveImage();
    const a = await NbdClient.connect(server.listen, { exportName: '' });
    const pending = a.read(0, 32 * MiB);
    a.destroy();
    await rejectsWith(pending, 'NBD_CONNECTION_CLOSED');
    a.destroy();

    const b = await NbdClient.connect(server.listen, { exportName: '' });
    const inFlight = b.read(0, 32 * MiB);
    const closed = b.close();
    await rejectsWith(b.read(0, 512), 'NBD_CONNECTION_CLOSED');
    assert.ok((await inFlight).equals(Buffer.alloc(32 * MiB, 0x11)));
    await closed;
  });

  it('fails to connect with NBD_CONNECT_FAILED, naming the address', async () => {
    const port = await freePort();
    const tcp = await rejectsWith(NbdClient.connect({ transport: 'tcp', host: '127.0.0.1', port }, { exportName: '' }), 'NBD_CONNECT_FAILED');
    assert.equal(tcp.subject.host, `127.0.0.1:${port}`);
    assert.match(tcp.message, /ECONNREFUSED/);
    const socket = join(scratch.dir, 'nobody.sock');
    const unix = await rejectsWith(NbdClient.connect({ transport: 'unix', socket }, { exportName: '' }), 'NBD_CONNECT_FAILED');
    assert.equal(unix.subject.socket, socket);
  });

  it('gives up on a silent server at the handshake deadline, and honours the AbortSignal', async () => {
    const silent = await listener();
    cleanups.push(() => silent.stop());
    const target = { transport: 'tcp' as const, host: '127.0.0.1', port: silent.port };
    const started = Date.now();
    const err = await rejectsWith(NbdClient.connect(target, { exportName: '', timeoutMs: 300 }), 'NBD_HANDSHAKE_FAILED');
    assert.match(err.message, /0.3 s/);
    assert.ok(Date.now() - started < 3_000);

    const controller = new AbortController();
    const connecting = NbdClient.connect(target, { exportName: '', signal: controller.signal });
    setImmediate(() => controller.abort());
    await assert.rejects(connecting, { name: 'AbortError' });
    await assert.rejects(NbdClient.connect(target, { exportName: '', signal: AbortSignal.abort() }), { name: 'AbortError' });
  });

  it('says so when the peer is not an NBD server', async () => {
    const http = await listener(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'));
    cleanups.push(() => http.stop());
    const err = await rejectsWith(NbdClient.connect({ transport: 'tcp', host: '127.0.0.1', port: http.port }, { exportName: '' }), 'NBD_HANDSHAKE_FAILED');
    assert.match(err.message, /NBDMAGIC/);
  });
});
