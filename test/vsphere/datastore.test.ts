/**
 * Datastore file transfers (hypervisors/vsphere/datastore.ts) when the HTTP side answers other
 * than 200. The simulator's /folder does not check the session cookie, so a session that expired
 * during a failover is shown through a forwarding HTTPS server of the test's own in front of the
 * simulator: it passes everything through, except that it answers /folder requests carrying a
 * cookie it was told is dead with 401 (before reading their body, as a server may), or any status
 * the test asks for. The session is the real one, logged in to the simulator through it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { statFile, uploadFile, type DatastoreFile, type UploadSource } from '../../hypervisors/vsphere/datastore.js';
import { parseVsphereUri } from '../../hypervisors/vsphere/endpoint.js';
import { VsphereSession } from '../../hypervisors/vsphere/session.js';
import { readFlatExtent } from '../../hypervisors/vsphere/vmdk.js';
import { ensureIdentity } from '../../plugin/sites/identity.js';
import { rejectsWith } from '../helpers/assertions.js';
import { runningChildren } from '../helpers/children.js';
import { startVcsim, type Vcsim } from '../helpers/vcsim.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const PASSWORD_ENV = 'VMDR_TEST_VSPHERE_DATASTORE_PASSWORD';

describe('vSphere datastore transfers: expired sessions and HTTP errors', function () {
  this.timeout(60_000);
  let vcsim: Vcsim;
  let dir: string;
  let proxy: Server;
  let fingerprint: string;
  /** Cookies the proxy answers 401 for on /folder, as a host does once their session is gone. */
  const dead = new Set<string>();
  /** A status the proxy answers every /folder request with, when set; 'stall': it reads nothing and never answers. */
  let forced: number | 'stall' | undefined;
  /** What the proxy answered by itself or passed on, for /folder requests: `PUT 401`, `PUT 200`. */
  const folderLog: string[] = [];
  let lastFolderCookie = '';
  let image: string;
  let imageHash: string;
  const sessions: VsphereSession[] = [];

  const sha256 = async (stream: Readable) => {
    const hash = createHash('sha256');
    for await (const chunk of stream) hash.update(chunk as Buffer);
    return hash.digest('hex');
  };

  before(async () => {
    vcsim = await startVcsim();
    process.env[PASSWORD_ENV] = vcsim.password;
    dir = await mkdtemp(join(tmpdir(), 'vmdr-vsphere-datastore-'));
    const identity = await ensureIdentity(join(dir, 'proxy'), 'proxy', ['127.0.0.1']);
    fingerprint = identity.fingerprint;
    proxy = createServer({ cert: identity.cert, key: identity.key }, (req, res) => {
      const cookie = req.headers.cookie ?? '';
      const folder = req.url?.startsWith('/folder/') ?? false;
      if (folder) lastFolderCookie = cookie;
      const refuse = folder ? (forced ?? (dead.has(cookie) ? 401 : undefined)) : undefined;
      if (refuse === 'stall') {
        folderLog.push(`${req.method} stalled`);
        req.pause();
        return;
      }
      if (refuse !== undefined) {
        folderLog.push(`${req.method} ${refuse}`);
        // Answered without reading the body, and the connection closed: the client must not wait for it to be read.
        res.writeHead(refuse, { connection: 'close' }).end();
        req.socket.end();
        return;
      }
      const upstream = request({ host: vcsim.host, port: vcsim.port, method: req.method, path: req.url, headers: req.headers, rejectUnauthorized: false }, (answer) => {
        if (folder) folderLog.push(`${req.method} ${answer.statusCode}`);
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      });
      upstream.once('error', () => res.destroy());
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));

    image = join(dir, 'point.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(32 * MiB)]);
    await exec('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x66 0 24M', image]);
    const raw = join(dir, 'point.raw');
    await exec('qemu-img', ['convert', '-O', 'raw', image, raw]);
    imageHash = (await exec('sha256sum', [raw])).stdout.split(' ')[0]!;
    await rm(raw);
  });

  after(async () => {
    for (const session of sessions) await session.logout().catch(() => undefined);
    delete process.env[PASSWORD_ENV];
    proxy?.closeAllConnections();
    await new Promise((resolve) => proxy?.close(resolve));
    await vcsim?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const open = async (uri: string) => {
    const session = await VsphereSession.open(parseVsphereUri(uri, { passwordEnv: PASSWORD_ENV }));
    sessions.push(session);
    return session;
  };
  const throughProxy = () => open(`vsphere://${vcsim.user}@127.0.0.1:${(proxy.address() as AddressInfo).port}/DC0?thumbprint=${fingerprint}`);
  const file = (path: string, datastore = 'LocalDS_0'): DatastoreFile => ({ datacenter: 'DC0', datastore, path });
  /** The point's flat extent, counting how often it was opened (each attempt opens it afresh). */
  const counted = () => {
    const opened = { count: 0 };
    return { opened, open: (): Promise<UploadSource> => (opened.count++, readFlatExtent(image, 32 * MiB)) };
  };
  const downloaded = async (session: VsphereSession, target: DatastoreFile) => {
    const response = await session.transfer.get<Readable>(`/folder/${target.path}`, { params: { dcPath: 'DC0', dsName: target.datastore }, responseType: 'stream', maxContentLength: Infinity });
    return sha256(response.data);
  };

  it('an upload refused with 401 because its session expired logs in again once and sends the whole body again', async () => {
    const session = await throughProxy();
    const witness = await open(vcsim.uri());
    const before = session.sessionKey!;
    await statFile(session, file('vmdr-test/none'));
    const cookie = lastFolderCookie;
    assert.match(cookie, /vmware_soap_session=/);
    // The session ends on the server (as it does when it expires); the host refuses its cookie.
    await witness.call('TerminateSession', witness.content.sessionManager, { sessionId: [before] });
    dead.add(cookie);
    folderLog.length = 0;

    const target = file('vmdr-test/expired-flat.vmdk');
    const source = counted();
    await uploadFile(session, target, source.open);
    assert.deepEqual(folderLog, ['PUT 401', 'PUT 200']);
    assert.equal(source.opened.count, 2, 'the body was read again from the point, not kept in memory');
    assert.deepEqual(await runningChildren(['qemu-nbd', 'nbdcopy']), [], 'the refused attempt ended its readers');
    assert.notEqual(session.sessionKey, before, 'a new session');
    assert.equal(await downloaded(witness, target), imageHash, 'the bytes are the point’s');
  });

  it('a 401 that logging in again does not cure, and other statuses, fail with VSPHERE_TRANSFER_FAILED and the status', async () => {
    const session = await throughProxy();
    try {
      forced = 401;
      folderLog.length = 0;
      const source = counted();
      const refused = await rejectsWith(uploadFile(session, file('vmdr-test/refused-flat.vmdk'), source.open), 'VSPHERE_TRANSFER_FAILED');
      assert.deepEqual(folderLog, ['PUT 401', 'PUT 401'], 'logged in again once, not in a loop');
      assert.deepEqual(await runningChildren(['qemu-nbd', 'nbdcopy']), []);
      assert.equal(refused.subject.status, 401);
      assert.match(refused.message, /\[LocalDS_0\] vmdr-test\/refused-flat\.vmdk/);

      forced = 500;
      const failed = await rejectsWith(uploadFile(session, file('vmdr-test/failed.txt'), Buffer.from('x')), 'VSPHERE_TRANSFER_FAILED');
      assert.equal(failed.subject.status, 500);
      await rejectsWith(statFile(session, file('vmdr-test/failed.txt')), 'VSPHERE_TRANSFER_FAILED');
    } finally {
      forced = undefined;
    }
  });

  it('an upload the datastore stops reading fails once it made no progress for the idle deadline, and ends its readers', async () => {
    const session = await throughProxy();
    try {
      forced = 'stall';
      const source = counted();
      const started = Date.now();
      const err = await rejectsWith(uploadFile(session, file('vmdr-test/stalled-flat.vmdk'), source.open, { idleTimeoutMs: 500 }), 'VSPHERE_TRANSFER_FAILED');
      assert.match(err.message, /no progress within 0\.5 s/);
      assert.ok(Date.now() - started < 10_000);
      assert.equal(source.opened.count, 1, 'not sent again: only a 401 is');
      assert.deepEqual(await runningChildren(['qemu-nbd', 'nbdcopy']), []);
    } finally {
      forced = undefined;
      proxy.closeAllConnections();
    }
  });

  it('a PUT to a datastore the host does not have is a not-found error naming the file', async () => {
    const session = await open(vcsim.uri());
    const err = await rejectsWith(uploadFile(session, file('vmdr-test/x.txt', 'NoSuchDS'), Buffer.from('x')), 'VSPHERE_FILE_NOT_FOUND');
    assert.match(err.message, /\[NoSuchDS\] vmdr-test\/x\.txt/);
    assert.equal(await statFile(session, file('vmdr-test/absent.txt')), undefined);
  });
});
