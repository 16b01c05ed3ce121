/**
 * `vmdr points` where the DR site's storage is not on this host (a source host): the points come
 * from the site's receiver, the same list the DR host's state file holds.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadIdentity } from '../../../plugin/sites/identity.js';
import { asThisSite } from '../../../plugin/sites/peer-connect.js';
import { freeLoopbackPort } from '../../../plugin/replication/sender/nbd-port.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import { runVmdr } from '../../helpers/lab.js';
import { KiB, MiB, chunks, encodeStream, receiverConfigYaml, streamBytes, streamHeader } from '../../helpers/receiver-lab.js';
import { startServe, type ServeProcess } from '../../helpers/vmdr-serve.js';

describe('vmdr points and status from a host that is not the DR host', function () {
  this.timeout(60_000);
  let dir: string;
  let serve: ServeProcess | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-points-'));
  });
  after(async () => {
    await serve?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('asks the receiver (points and status), and says so when it is down', async () => {
    const listen = `127.0.0.1:${await freeLoopbackPort()}`;
    const credentials = join(dir, 'receiver');
    const protections = [{ name: 'web' }];
    const drConfig = join(dir, 'dr.yaml');
    await writeFile(drConfig, receiverConfigYaml({ statePath: join(dir, 'dr.db'), storage: join(dir, 'replicas'), listen, credentials, protections }));
    // The source host's copy: same receiver and credentials, its own state, no replicas here.
    const sourceConfig = join(dir, 'source.yaml');
    await writeFile(sourceConfig, receiverConfigYaml({ statePath: join(dir, 'source.db'), storage: join(dir, 'not-here'), listen, credentials, protections }));
    serve = await startServe(drConfig);
    const second = await runVmdr(['serve', '--no-replicate', '--config', drConfig]);
    assert.equal(second.code, 1);
    // One daemon per site of a state file: the second is refused before it tries to listen.
    assert.match(second.stderr, /^vmdr: another vmdr serve runs site "\w+" on state file \S+dr\.db /);

    const client = new ReceiverClient(`https://${listen}`, 'dr', asThisSite(await loadIdentity(credentials)));
    const disks = [{ name: 'vda', sizeBytes: 4 * MiB }];
    const stream = encodeStream(streamHeader({ protection: 'web', disks, base: null, n: 1 }), [{ kind: 'data', disk: 0, offset: 64 * KiB, data: Buffer.alloc(64 * KiB, 7) }]);
    const committed = await client.sendCycle('web', chunks(streamBytes(stream)));
    client.close();

    const r = await runVmdr(['points', 'web', '--json', '--config', sourceConfig]);
    assert.equal(r.code, 0, r.stderr);
    const listed = JSON.parse(r.stdout) as { id: string; checkpoint: string; disks: { image: string }[] }[];
    assert.deepEqual(listed.map((p) => [p.id, p.checkpoint]), [[committed.id, 'vmdr-web-1']]);
    assert.equal(listed[0]!.disks[0]!.image, join(dir, 'replicas', 'web', 'vda', 'point-1.qcow2'), 'the DR host\'s path of the image');

    const status = await runVmdr(['status', '--json', '--config', sourceConfig]);
    assert.equal(status.code, 0, status.stderr);
    const [row] = JSON.parse(status.stdout) as { lastPoint: { id: string } | null; lagSeconds: number | null; pointsProblem: string | null }[];
    assert.equal(row!.lastPoint?.id, committed.id);
    assert.ok(row!.lagSeconds !== null && row!.lagSeconds > 0);

    await serve.stop();
    serve = undefined;
    const down = await runVmdr(['points', 'web', '--config', sourceConfig]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^vmdr: cannot reach the endpoint of site "dr" at https:\/\/127\.0\.0\.1:\d+: .*\n$/);
    // status is what an operator runs when things are broken: the row says why, the command succeeds.
    const blind = await runVmdr(['status', '--json', '--config', sourceConfig]);
    assert.equal(blind.code, 0, blind.stderr);
    const [row2] = JSON.parse(blind.stdout) as { lastPoint: unknown; pointsProblem: string | null }[];
    assert.equal(row2!.lastPoint, null);
    assert.match(row2!.pointsProblem ?? '', /cannot reach the endpoint of site "dr"/);
  });
});
