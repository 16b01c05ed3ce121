/**
 * `vmdr points` on the DR host of a protection with time tiers: which tier keeps each point, the
 * space each point and the replica occupy, and `--at` (ISO 8601 or back from now); `vmdr status
 * --json` says the space too, and `vmdr failover --at` takes the same times.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ReplicaStore } from '../../../plugin/replication/replica/store.js';
import { freeLoopbackPort } from '../../../plugin/replication/sender/nbd-port.js';
import { ReceiverClient } from '../../../plugin/replication/sender/receiver-client.js';
import { loadIdentity } from '../../../plugin/sites/identity.js';
import { asThisSite } from '../../../plugin/sites/peer-connect.js';
import { StateStore } from '../../../plugin/state/store.js';
import { runVmdr } from '../../helpers/lab.js';
import { chunks, encodeStream, receiverConfigYaml, streamBytes, streamHeader } from '../../helpers/receiver-lab.js';
import { startServe, type ServeProcess } from '../../helpers/vmdr-serve.js';
import { KiB, MiB, reads, writePattern } from './replica/helpers.js';

const exec = promisify(execFile);
const MIN = 60_000;
const HOUR = 60 * MIN;

/** What `du` counts for these files (st_blocks × 512), one number. */
async function du(files: string[]): Promise<number> {
  const { stdout } = await exec('du', ['-c', '--block-size=1', ...files]);
  return Number(/^(\d+)\s+total$/m.exec(stdout)![1]);
}

describe('vmdr points: tiers, space and --at (CLI, DR host)', function () {
  this.timeout(60_000);
  let dir: string;
  let config: string;
  let storage: string;
  const times: Date[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-points-tiers-'));
    storage = join(dir, 'replicas');
    config = join(dir, 'dr.yaml');
    const protections = [{ name: 'web', retention: '{ all: 15m, hourly: 1d, daily: 30d }' }];
    await writeFile(config, receiverConfigYaml({ statePath: join(dir, 'dr.db'), storage, listen: '127.0.0.1:1', credentials: join(dir, 'receiver'), protections }));
    // Times on hour boundaries, so each point's tier does not depend on when the test runs.
    const now = Date.now();
    const hour = Math.floor(now / HOUR) * HOUR;
    times.push(...[hour - 240 * HOUR + 10 * MIN, hour - 3 * HOUR + 10 * MIN, hour - 3 * HOUR + 20 * MIN, now - 10 * MIN, now - 5 * MIN].map((t) => new Date(t)));
    const state = StateStore.open(join(dir, 'dr.db'));
    const replicas = new ReplicaStore(storage, state);
    for (const [i, time] of times.entries()) {
      const pending = await replicas.beginPoint('web', [{ name: 'vda', sizeBytes: 16 * MiB }]);
      await writePattern(pending.overlays[0]!.image, 0x40 + i, i * MiB, (i + 1) * 256 * KiB);
      await pending.commit({ time, checkpoint: `vmdr-web-${i + 1}`, since: null, kind: 'incremental', bytesShipped: 1, dataBytes: 1, zeroBytes: 0 });
    }
    state.close();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('shows which tier keeps each point, and the bytes each point and the replica occupy', async () => {
    const r = await runVmdr(['points', 'web', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /^ID\s+TIME\s+KIND\s+TIER\s+CONSISTENCY\s+CHECKPOINT\s+SHIPPED\s+SPACE\s+IMAGES$/);
    // rp-2 shares its hour with rp-3, which is newer: the next retention run merges it.
    assert.deepEqual(lines.slice(1, 6).map((l) => l.split(/\s{2,}/).slice(0, 4).join(' | ')), [
      `rp-1 | ${times[0]!.toISOString()} | incremental | daily`,
      `rp-2 | ${times[1]!.toISOString()} | incremental | expiring`,
      `rp-3 | ${times[2]!.toISOString()} | incremental | hourly`,
      `rp-4 | ${times[3]!.toISOString()} | incremental | all`,
      `rp-5 | ${times[4]!.toISOString()} | incremental | newest`,
    ]);
    assert.match(lines[6]!, /^web: \d+\.\d (KiB|MiB) used on the DR site \(its points \d+\.\d (KiB|MiB), boot overlays of failovers and drills and other files \d+(\.\d)? (B|KiB|MiB)\)$/);

    const json = await runVmdr(['points', 'web', '--json', '--config', config]);
    assert.equal(json.code, 0, json.stderr);
    const points = JSON.parse(json.stdout) as { id: string; tier: string; allocatedBytes: number; disks: { image: string }[] }[];
    assert.deepEqual(points.map((p) => p.tier), ['daily', 'expiring', 'hourly', 'all', 'newest']);
    for (const p of points) assert.equal(p.allocatedBytes, await du(p.disks.map((d) => d.image)), `${p.id}: what du says of its image`);
    // Point i wrote (i + 1) × 256 KiB: each occupies at least that.
    points.forEach((p, i) => assert.ok(p.allocatedBytes >= (i + 1) * 256 * KiB, `${p.id} ${p.allocatedBytes}`));

    const status = await runVmdr(['status', '--json', '--config', config]);
    assert.equal(status.code, 0, status.stderr);
    const [row] = JSON.parse(status.stdout) as { protection: string; space: { bytes: number } | null }[];
    const { stdout: files } = await exec('find', [join(storage, 'web'), '-type', 'f']);
    assert.equal(row!.space?.bytes, await du(files.trim().split('\n')), 'every file of the replica, as du counts it');
  });

  it('--at picks the newest point at or before an ISO 8601 time or a time back from now', async () => {
    const at = async (time: string) => {
      const r = await runVmdr(['points', 'web', '--json', '--at', time, '--config', config]);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { id: string }[]).map((p) => p.id);
    };
    assert.deepEqual(await at(times[2]!.toISOString()), ['rp-3'], 'exactly its time');
    assert.deepEqual(await at(new Date(times[2]!.getTime() - 1).toISOString()), ['rp-2'], 'a millisecond before');
    assert.deepEqual(await at('-7m'), ['rp-4']);
    assert.deepEqual(await at('-1d'), ['rp-1']);
    assert.deepEqual(await at('-2h'), ['rp-3']);
    const text = await runVmdr(['points', 'web', '--at', '-1m', '--config', config]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^ID .*\nrp-5 .* newest .*\n$/);
  });

  it('says in one line when no point is that old (exit 1), and when the time does not parse (exit 2)', async () => {
    const early = await runVmdr(['points', 'web', '--at', '2001-01-01T00:00:00Z', '--config', config]);
    assert.equal(early.code, 1);
    assert.equal(
      early.stderr,
      `vmdr: protection "web" has no recovery point at or before 2001-01-01T00:00:00.000Z: the oldest is rp-1 of ${times[0]!.toISOString()} (name a later time, or see \`vmdr points web\`)\n`,
    );
    assert.equal(early.stdout, '');
    for (const [command, wrong] of [
      ['points', 'yesterday 14:05'],
      ['points', '-2 hours'],
      ['failover', 'banana'],
      ['failover', '-2 hours'],
    ] as const) {
      const r = await runVmdr([command, 'web', '--at', wrong, '--config', config]);
      assert.equal(r.code, 2, `${command} --at ${wrong}: ${r.stderr}`);
      assert.equal(r.stderr, `vmdr: --at "${wrong}" is not a time such as 2026-11-25T14:05:00Z or -2h (back from now) (see vmdr ${command} --help)\n`);
    }
  });
});

describe('retention tiers in vmdr serve, points asked of its receiver', function () {
  this.timeout(60_000);
  let dir: string;
  let serve: ServeProcess | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-points-tiers-serve-'));
  });
  after(async () => {
    await serve?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('merges a point out of the middle after a commit; a source host sees tiers and space through the receiver', async () => {
    const listen = `127.0.0.1:${await freeLoopbackPort()}`;
    const credentials = join(dir, 'receiver');
    const protections = [{ name: 'web', retention: '{ all: 10m, hourly: 1d }' }];
    const drConfig = join(dir, 'dr.yaml');
    await writeFile(drConfig, receiverConfigYaml({ statePath: join(dir, 'dr.db'), storage: join(dir, 'replicas'), listen, credentials, protections }));
    const sourceConfig = join(dir, 'source.yaml');
    await writeFile(sourceConfig, receiverConfigYaml({ statePath: join(dir, 'source.db'), storage: join(dir, 'not-here'), listen, credentials, protections }));
    serve = await startServe(drConfig);

    const client = new ReceiverClient(`https://${listen}`, 'dr', asThisSite(await loadIdentity(credentials)));
    const disks = [{ name: 'vda', sizeBytes: 4 * MiB }];
    const hour = Math.floor(Date.now() / HOUR) * HOUR;
    // rp-2 and rp-3 share an hour: rp-2 goes from between rp-1 and rp-3, its block moving up into rp-3.
    const times = [hour - 5 * HOUR + 10 * MIN, hour - 2 * HOUR + 10 * MIN, hour - 2 * HOUR + 20 * MIN, Date.now() - MIN];
    let base: string | null = null;
    for (const [i, time] of times.entries()) {
      const header = { ...streamHeader({ protection: 'web', disks, base, n: i + 1 }), createdAt: new Date(time).toISOString() };
      const stream = encodeStream(header, [{ kind: 'data', disk: 0, offset: i * 64 * KiB, data: Buffer.alloc(64 * KiB, 0x51 + i) }]);
      base = (await client.sendCycle('web', chunks(streamBytes(stream)))).id;
    }
    // Retention runs after the answer, in the protection's turn: wait for it.
    type Listed = { id: string; tier: string; allocatedBytes: number | null; disks: { image: string }[] };
    let points: Listed[] = [];
    for (const deadline = Date.now() + 20_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
      const r = await runVmdr(['points', 'web', '--json', '--config', sourceConfig]);
      assert.equal(r.code, 0, r.stderr);
      points = JSON.parse(r.stdout) as Listed[];
      if (points.length === 3) break;
    }
    client.close();
    assert.deepEqual(points.map((p) => [p.id, p.tier]), [['rp-1', 'hourly'], ['rp-3', 'hourly'], ['rp-4', 'newest']]);
    for (const p of points) assert.equal(p.allocatedBytes, await du(p.disks.map((d) => d.image)), `${p.id}: the receiver says what du says`);
    // rp-3 still reads rp-2's block (now in its own overlay), and its own.
    const rp3 = points[1]!.disks[0]!.image;
    assert.ok(await reads(rp3, 0x52, 64 * KiB, 64 * KiB), "rp-2's block, merged up");
    assert.ok(await reads(rp3, 0x53, 128 * KiB, 64 * KiB));
    assert.ok(await reads(rp3, 0x00, 192 * KiB, 64 * KiB), "rp-4's block is not under rp-3");

    const text = await runVmdr(['points', 'web', '--config', sourceConfig]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /\nweb: \d+(\.\d)? (KiB|MiB) used on the DR site \(its points .*\)\n$/);
  });
});
