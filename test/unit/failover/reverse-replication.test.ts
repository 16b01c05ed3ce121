/**
 * Failback's data path, source side and DR side, with real parts: qcow2 images made by qemu-img,
 * the source VM defined (off) on the real libvirtd so the adapter's writer serves its disk, the
 * source site's endpoint over HTTPS on loopback, and a TCP relay in between that counts (and can
 * cut) the bytes on the wire. Judged by what a user would check: the images byte for byte
 * (qemu-img compare), the bytes on the wire against the bytes changed, and the refusal's code.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { openAdapter } from '../../../hypervisors/index.js';
import { serveImageOverNbd, type NbdImageServer } from '../../../hypervisors/qemu-nbd.js';
import type { HypervisorAdapter } from '../../../hypervisors/types.js';
import { parseConfig } from '../../../plugin/config/load.js';
import type { Config, Protection } from '../../../plugin/config/schema.js';
import { copyDifferences } from '../../../plugin/failover/copy-differences.js';
import { startReceiver } from '../../../plugin/replication/receiver/server.js';
import { ReplicaStore } from '../../../plugin/replication/replica/store.js';
import { freeLoopbackPort } from '../../../plugin/replication/sender/nbd-port.js';
import { DeltaStreamEncoder } from '../../../plugin/replication/stream/encode.js';
import { SiteConnections } from '../../../plugin/sites/connections.js';
import { failbackSourceOf, type FailbackSource } from '../../../plugin/sites/failback-source.js';
import { RemoteFailbackSource } from '../../../plugin/sites/failback-client.js';
import { ensureIdentity } from '../../../plugin/sites/identity.js';
import { PeerClient } from '../../../plugin/sites/peer-client.js';
import { pairPeer } from '../../../plugin/sites/peers.js';
import { StateStore } from '../../../plugin/state/store.js';

const exec = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 16 * MiB;

/** A loopback TCP relay that counts what the client sends and can cut the link after so many bytes. */
class Relay {
  up = 0;
  cutAfter = Infinity;
  private readonly sockets = new Set<Socket>();
  private constructor(readonly server: Server) {}

  static async start(target: number): Promise<Relay> {
    const relay = new Relay(createServer());
    relay.server.on('connection', (client) => {
      const upstream = createConnection({ host: '127.0.0.1', port: target });
      for (const s of [client, upstream]) {
        relay.sockets.add(s);
        s.on('close', () => relay.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.on('data', (chunk: Buffer) => {
        relay.up += chunk.length;
        if (relay.up > relay.cutAfter) {
          client.destroy();
          upstream.destroy();
          return;
        }
        upstream.write(chunk);
      });
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => relay.server.listen(0, '127.0.0.1', resolve));
    return relay;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe('failback: reverse replication to the source site (real images, HTTPS on loopback)', function () {
  this.timeout(120_000);
  let root: string;
  let adapter: HypervisorAdapter;
  let vmName: string;
  let sourceImage: string;
  let drImage: string;
  let drExport: NbdImageServer | undefined;
  let state: StateStore;
  let app: FastifyInstance;
  let relay: Relay;
  let drConfig: Config;
  let sites: SiteConnections;
  let p: Protection;

  const qemuImg = (...args: string[]) => exec('qemu-img', args);
  /** True when the two images read the same, byte for byte. */
  const same = async () => (await exec('qemu-img', ['compare', '-U', '-q', '-f', 'qcow2', '-F', 'qcow2', sourceImage, drImage]).then(() => true, () => false));
  /** Writes `data` at `offset` of the DR image (it is served read-only to the pass, so not meanwhile). */
  const writeDr = async (offset: number, data: Buffer | 'zero', length = 0) => {
    const file = join(root, 'chunk.bin');
    if (data === 'zero') return exec('qemu-io', ['-f', 'qcow2', '-c', `write -z ${offset} ${length}`, drImage]);
    await writeFile(file, data);
    await exec('qemu-io', ['-f', 'qcow2', '-c', `write -s ${file} ${offset} ${data.length}`, drImage]);
  };
  /** One pass on disk vda from the DR image (as a backup export would serve it) through `source`. */
  const pass = async (source: FailbackSource) => {
    drExport = await serveImageOverNbd(drImage, { readOnly: true });
    try {
      return await copyDifferences({ listen: drExport.listen, exportName: '', checkpoint: 'vmdr-failback-test' }, source, p, 'vda');
    } finally {
      await drExport.stop();
      drExport = undefined;
    }
  };
  const remote = () => failbackSourceOf({ config: drConfig, file: 'dr.yaml', sites }, p);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-failback-'));
    sourceImage = join(root, 'source-vda.qcow2');
    drImage = join(root, 'dr-vda.qcow2');
    // Both start from the same incompressible bytes, as a source and the DR VM booted from its replica do.
    await writeFile(join(root, 'base.raw'), randomBytes(SIZE));
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', join(root, 'base.raw'), sourceImage);
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', join(root, 'base.raw'), drImage);

    adapter = openAdapter('qemu:///system');
    await adapter.connect();
    vmName = `test-failback-${randomBytes(3).toString('hex')}`;
    await adapter.defineVm({ name: vmName, memoryMiB: 64, vcpus: 1, boot: { kind: 'disk' }, disks: [{ path: sourceImage, format: 'qcow2', target: 'vda' }], nics: [] });

    const port = await freeLoopbackPort();
    // Two sites, paired: each pins the other's certificate.
    const credentials = await ensureIdentity(join(root, 'endpoint-source'), 'source', ['127.0.0.1']);
    const drIdentity = await ensureIdentity(join(root, 'endpoint-dr'), 'dr', ['127.0.0.1']);
    await pairPeer(credentials, 'source', 'dr', drIdentity.cert, { file: 'dr.crt' });
    await pairPeer(drIdentity, 'dr', 'source', credentials.cert, { file: 'source.crt' });
    const yaml = (localSite: string, url: string) => `version: 1
localSite: ${localSite}
state: { path: ${join(root, `${localSite}.db`)} }
sites:
  - name: source
    uri: "qemu:///system"
    storage: ${join(root, 'source-storage')}
    receiver: { listen: "127.0.0.1:${port}", url: "${url}", credentials: ${credentials.dir} }
  - name: dr
    uri: "qemu:///system"
    storage: ${join(root, 'replicas')}
    receiver: { listen: "127.0.0.1:1", credentials: ${drIdentity.dir} }
protections:
  - name: ${vmName}
    source: { site: source, vm: ${vmName} }
    target: { site: dr, vm: ${vmName}-dr, nics: [{ network: test-net }] }
  - name: other
    source: { site: dr, vm: other }
    target: { site: source, vm: other-dr, nics: [{ network: test-net }] }
`;
    // The source site's own endpoint, as its `vmdr serve` runs it.
    const sourceConfig = parseConfig(yaml('source', `https://127.0.0.1:${port}`), join(root, 'source.yaml'));
    state = StateStore.open(sourceConfig.state.path);
    ({ app } = await startReceiver({ config: sourceConfig, site: 'source', replicas: new ReplicaStore(join(root, 'source-storage'), state), credentials }, { host: '127.0.0.1', port }));
    // The DR site reaches it through the relay.
    relay = await Relay.start(port);
    drConfig = parseConfig(yaml('dr', `https://127.0.0.1:${relay.port}`), join(root, 'dr.yaml'));
    sites = new SiteConnections(drConfig, 'dr.yaml');
    p = drConfig.protections[0]!;
  });

  after(async () => {
    await drExport?.stop();
    await sites?.close();
    await relay?.close();
    await app?.close();
    state?.close();
    await adapter?.undefine(vmName).catch(() => undefined);
    await adapter?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('sends only the blocks that differ, and the source then equals the DR disk byte for byte', async () => {
    // What the DR VM wrote: 3 random runs (aligned and not) and a zeroed MiB.
    await writeDr(1 * MiB, randomBytes(192 * KiB));
    await writeDr(5 * MiB + 4 * KiB, randomBytes(100 * KiB)); // within the two 64 KiB blocks from 5 MiB
    await writeDr(12 * MiB, 'zero', 1 * MiB);
    assert.equal(await same(), false);
    const changedData = 192 * KiB + 128 * KiB; // whole 64 KiB blocks
    const source = await remote();
    assert.equal(source.remote, true);
    relay.up = 0;
    let result;
    try {
      result = await pass(source);
    } finally {
      source.close();
    }
    assert.equal(result.bytesCompared, SIZE);
    assert.equal(result.bytesDiffering, changedData + 1 * MiB);
    // The zeroed MiB travels as a zero frame; the data as itself (random: zstd does not shrink it).
    assert.ok(result.bytesSent >= changedData && result.bytesSent < changedData + 4 * KiB, `stream of ${result.bytesSent} bytes`);
    // On the wire: the stream plus TLS, HTTP and the hash request; never the 16 MiB disk.
    assert.ok(relay.up >= changedData && relay.up < changedData + 32 * KiB, `${relay.up} bytes on the wire for ${changedData} bytes changed`);
    assert.equal(await same(), true);

    // A second pass finds nothing to send.
    const again = await remote();
    try {
      assert.deepEqual(await pass(again), { bytesCompared: SIZE, bytesDiffering: 0, bytesSent: 0 });
    } finally {
      again.close();
    }
  });

  it('a stream cut mid-way commits nothing; the next pass makes the images equal', async () => {
    await writeDr(2 * MiB, randomBytes(4 * MiB));
    const cut = await remote();
    relay.up = 0;
    relay.cutAfter = 1 * MiB;
    try {
      await assert.rejects(pass(cut), (err: Error & { code?: string }) => {
        assert.match(String(err.code), /^PEER_UNREACHABLE$/, `${err.code}: ${err.message}`);
        return true;
      });
    } finally {
      relay.cutAfter = Infinity;
      cut.close();
    }
    assert.equal(await same(), false, 'part of the stream was written, not all of it');
    const next = await remote();
    try {
      const result = await pass(next);
      assert.ok(result.bytesDiffering > 0 && result.bytesDiffering <= 4 * MiB, `${result.bytesDiffering} bytes still differed`);
    } finally {
      next.close();
    }
    assert.equal(await same(), true);
  });

  it('refuses a peer that sends corrupt frames with the decoder\'s code, and writes none of them', async () => {
    const source = await remote();
    try {
      const encoder = new DeltaStreamEncoder(
        { session: 's', protection: p.name, checkpoint: 'c', since: null, base: null, kind: 'resync', disks: [{ name: 'vda', sizeBytes: SIZE }], createdAt: new Date().toISOString() },
        { compressionLevel: 0 },
      );
      const start = encoder.start();
      const [frame, payload] = encoder.data(0, 0, Buffer.alloc(64 * KiB, 0x5a));
      payload!.writeUInt8(payload!.readUInt8(100) ^ 0xff, 100);
      const body = [start, frame!, payload!, ...encoder.end()];
      await assert.rejects(source.write(p, 'vda', (async function* () { yield* body; })()), { code: 'STREAM_CHECKSUM_MISMATCH' });
    } finally {
      source.close();
    }
    assert.equal(await same(), true, 'the source image is as it was');
  });

  it('serves only protections whose source is this site, and only disks the source VM has', async () => {
    const other = drConfig.protections[1]!;
    // Asked as if "other" were the source site's: that site is only its target.
    const source = await remote();
    try {
      await assert.rejects(source.hashes({ ...other, source: { ...other.source, site: 'source' } }, 'vda', SIZE), { code: 'PROTECTION_UNKNOWN' });
      await assert.rejects(source.hashes(p, 'vdz', SIZE), { code: 'DISK_NOT_FOUND' });
    } finally {
      source.close();
    }
  });

  it("answers only the protection's DR site: another paired site learns nothing of it", async () => {
    const cee = await ensureIdentity(join(root, 'endpoint-cee'), 'cee');
    const sourceIdentity = await ensureIdentity(join(root, 'endpoint-source'), 'source');
    await pairPeer(sourceIdentity, 'source', 'cee', cee.cert, { file: 'cee.crt' });
    const asCee = new RemoteFailbackSource(new PeerClient(`https://127.0.0.1:${relay.port}`, 'source', { cert: cee.cert, key: cee.key, pinned: sourceIdentity.cert }));
    try {
      await assert.rejects(asCee.hashes(p, 'vda', SIZE), { code: 'PROTECTION_UNKNOWN' });
      await assert.rejects(asCee.write(p, 'vda', (async function* () { yield Buffer.from('not read'); })()), { code: 'PROTECTION_UNKNOWN' });
    } finally {
      asCee.close();
    }
  });

  it("opens no writer through a remote libvirt URI: qemu-nbd would open an image of this host", async () => {
    const remote = openAdapter('qemu+ssh://source.example.invalid/system');
    await assert.rejects(remote.openDiskWriter(vmName, 'vda'), { code: 'UNSUPPORTED' });
  });

  it('on one host (no localSite) the same pass runs in this process through the adapter', async () => {
    await writeDr(7 * MiB, randomBytes(64 * KiB));
    const { localSite: _drop, ...oneHost } = drConfig;
    const oneHostSites = new SiteConnections(oneHost as Config, 'one.yaml');
    const local = await failbackSourceOf({ config: oneHost as Config, file: 'one.yaml', sites: oneHostSites }, p);
    assert.equal(local.remote, false);
    relay.up = 0;
    const result = await pass(local).finally(() => oneHostSites.close());
    assert.equal(result.bytesDiffering, 64 * KiB);
    assert.equal(relay.up, 0, 'nothing went through the endpoint');
    assert.equal(await same(), true);
  });
});
