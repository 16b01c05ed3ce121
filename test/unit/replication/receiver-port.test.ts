/**
 * A receiver asked for port 0 (any free port, as a test or an embedding does; a config file names a
 * real port) reports the port it really bound, which `vmdr serve` prints, and senders reach it there.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../../plugin/config/load.js';
import { loadIdentity } from '../../../plugin/sites/identity.js';
import { asThisSite } from '../../../plugin/sites/peer-connect.js';
import { startReceivers, type RunningReceiver } from '../../../plugin/replication/receiver/run.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import { StateStore } from '../../../plugin/state/store.js';
import { receiverConfigYaml } from '../../helpers/receiver-lab.js';

describe('a receiver on port 0', function () {
  this.timeout(60_000);
  let dir: string;
  let state: StateStore | undefined;
  let running: RunningReceiver[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-port-'));
  });
  after(async () => {
    await Promise.allSettled(running.map((r) => r.close()));
    state?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reports the port it bound, and senders reach the receiver there', async () => {
    const file = join(dir, 'dr.yaml');
    const credentials = join(dir, 'receiver');
    const config = parseConfig(
      receiverConfigYaml({ statePath: join(dir, 'dr.db'), storage: join(dir, 'replicas'), listen: '127.0.0.1:8443', credentials, protections: [{ name: 'web' }] }),
      file,
    );
    config.sites.find((s) => s.name === 'dr')!.endpoint!.listen = '127.0.0.1:0';
    state = StateStore.open(join(dir, 'dr.db'));
    running = await startReceivers(config, file, state);
    const [receiver] = running;
    const port = Number(/^127\.0\.0\.1:(\d+)$/.exec(receiver!.listening)?.[1]);
    assert.ok(port > 0, `listening on ${receiver!.listening}`);
    assert.equal(receiver!.url, `https://127.0.0.1:${port}`);
    const client = new ReceiverClient(receiver!.url, 'dr', asThisSite(await loadIdentity(credentials)));
    try {
      assert.equal(await client.latestPoint('web'), undefined);
    } finally {
      client.close();
    }
  });
});
