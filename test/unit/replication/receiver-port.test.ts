/**
 * `vmdr serve` with a receiver on port 0 (the kernel picks one): it prints the port it really
 * bound, and that port answers.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSenderCredentials } from '../../../plugin/replication/receiver/credentials.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import { receiverConfigYaml } from '../../helpers/receiver-lab.js';
import { startServe, type ServeProcess } from '../../helpers/vmdr-serve.js';

describe('vmdr serve on port 0', function () {
  this.timeout(60_000);
  let dir: string;
  let serve: ServeProcess | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-port-'));
  });
  after(async () => {
    await serve?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the port it bound, and senders reach the receiver there', async () => {
    const config = join(dir, 'dr.yaml');
    const credentials = join(dir, 'receiver');
    await writeFile(config, receiverConfigYaml({ statePath: join(dir, 'dr.db'), storage: join(dir, 'replicas'), listen: '127.0.0.1:0', credentials, protections: [{ name: 'web' }] }));
    serve = await startServe(config);
    const event = serve.events.find((e) => e.event === 'receiver') as { listening: string; url: string };
    const port = Number(/^127\.0\.0\.1:(\d+)$/.exec(event.listening)?.[1]);
    assert.ok(port > 0, `listening on ${event.listening}`);
    assert.equal(event.url, `https://127.0.0.1:${port}`);
    const client = new ReceiverClient(event.url, 'dr', await loadSenderCredentials(credentials));
    try {
      assert.equal(await client.latestPoint('web'), undefined);
    } finally {
      client.close();
    }
  });
});
