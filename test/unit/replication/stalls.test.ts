/**
 * A link that goes silent without closing (a WAN cut with no FIN): neither side may wait forever.
 * The receiver abandons a cycle whose body stops (overlays discarded, turn and lease released);
 * the sender gives up on a receiver that stops answering. Real HTTPS on loopback, real qemu-nbd.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { parseConfig } from '../../../plugin/config/load.js';
import { ensureIdentity, type SiteIdentity } from '../../../plugin/sites/identity.js';
import { asThisSite } from '../../../plugin/sites/peer-connect.js';
import { startReceiver } from '../../../plugin/replication/receiver/server.js';
import { ReplicaStore } from '../../../plugin/replication/replica/store.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import { StateStore } from '../../../plugin/state/store.js';
import { rejectsWith } from '../../helpers/assertions.js';
import { KiB, MiB, encodeStream, eventually, receiverConfigYaml, streamBytes, streamHeader, strayPointFiles } from '../../helpers/receiver-lab.js';

describe('a link that goes silent', function () {
  this.timeout(60_000);
  const disks = [{ name: 'vda', sizeBytes: 4 * MiB }];
  let root: string;
  let state: StateStore;
  let replicas: ReplicaStore;
  let credentials: SiteIdentity;
  let app: FastifyInstance;
  let url: string;
  let silent: Server | undefined;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-stalls-'));
    credentials = await ensureIdentity(join(root, 'receiver'), 'dr');
    const statePath = join(root, 'state.db');
    const config = parseConfig(
      receiverConfigYaml({ statePath, storage: join(root, 'replicas'), listen: '127.0.0.1:8443', credentials: credentials.dir, protections: [{ name: 'web' }] }),
      join(root, 'vmdr.yaml'),
    );
    state = StateStore.open(statePath);
    replicas = new ReplicaStore(join(root, 'replicas'), state);
    let port: number;
    ({ app, port } = await startReceiver({ config, site: 'dr', replicas, credentials, bodyIdleTimeoutMs: 1_000 }, { host: '127.0.0.1', port: 0 }));
    url = `https://127.0.0.1:${port}`;
  });

  after(async () => {
    await app?.close();
    silent?.close();
    state?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('the receiver abandons a cycle whose sender stops sending, and takes the next one', async () => {
    const client = new ReceiverClient(url, 'dr', asThisSite(credentials));
    const stream = encodeStream(streamHeader({ protection: 'web', disks, base: null, n: 1 }), [{ kind: 'data', disk: 0, offset: 0, data: Buffer.alloc(64 * KiB, 1) }]);
    const [start, ...frames] = streamBytes(stream);
    // The header and nothing else, then silence: the generator never finishes.
    let release!: () => void;
    const never = new Promise<void>((resolve) => (release = resolve));
    const stalled = (async function* () {
      yield start!;
      await never;
    })();
    const started = Date.now();
    // The receiver answers why before it closes the connection.
    const err = await rejectsWith(client.sendCycle('web', stalled), 'STREAM_STALLED');
    release();
    assert.ok(Date.now() - started < 15_000, `gave up after ${Date.now() - started} ms`);
    assert.match(err.message, /no data from the sender for 1 s/);
    assert.equal(replicas.latestPoint('web'), undefined);
    // The sender sees the reset at once; the receiver's discard finishes a moment later.
    await eventually(async () => assert.deepEqual(await strayPointFiles(join(root, 'replicas'), 'web', []), []));
    // The turn and the lease were released: the next cycle commits at once.
    const point = await client.sendCycle('web', (async function* () {
      yield start!;
      yield* frames;
    })());
    assert.equal(point.id, 'rp-1');
    client.close();
  });

  it('the sender gives up on a receiver that accepts the connection and never answers', async () => {
    silent = createServer(() => undefined);
    await new Promise<void>((resolve) => silent!.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    const client = new ReceiverClient(`https://127.0.0.1:${port}`, 'dr', asThisSite(credentials), { idleTimeoutMs: 1_000 });
    const started = Date.now();
    const err = await rejectsWith(client.latestPoint('web'), 'PEER_UNREACHABLE');
    assert.ok(Date.now() - started < 10_000);
    assert.match(err.message, /no answer for 1 s/);
    client.close();
  });
});
