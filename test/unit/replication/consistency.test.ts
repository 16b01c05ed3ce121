/**
 * Application-consistent points without a guest: the config's keys, the stream header's fields,
 * and what the replica store and the state file keep of them (a state file from before the
 * migration reads as crash-consistent). The freeze itself is tested on the lab
 * (test/lab/app-consistent.test.ts).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ConfigInvalid } from '../../../plugin/config/errors.js';
import { parseConfig } from '../../../plugin/config/load.js';
import { describeConsistency } from '../../../plugin/replication/consistency.js';
import { decodeDeltaStream } from '../../../plugin/replication/stream/decode.js';
import { DeltaStreamEncoder } from '../../../plugin/replication/stream/encode.js';
import { StreamError } from '../../../plugin/replication/stream/errors.js';
import type { StreamHeader } from '../../../plugin/replication/stream/format.js';
import { migrations } from '../../../plugin/state/migrations.js';
import { StateStore } from '../../../plugin/state/store.js';
import { makeLab, MiB, type Lab } from './replica/helpers.js';

const config = (lines: string) => `version: 1
sites:
  - name: prod
    uri: test:///default
protections:
  - name: web
    source: { site: prod, vm: web }
    target: { site: prod, vm: web-dr, nics: [{ network: n }] }
${lines}`;

function refusedConfig(text: string): string {
  try {
    parseConfig(text, 'vmdr.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigInvalid, String(err));
    return err.message;
  }
  assert.fail('the config was accepted');
}

const header = (extra: Partial<StreamHeader> = {}): StreamHeader => ({
  session: 's1',
  protection: 'web',
  checkpoint: 'vmdr-web-2',
  since: null,
  base: null,
  kind: 'full',
  disks: [{ name: 'vda', sizeBytes: MiB }],
  createdAt: '2026-12-01T12:00:00.000Z',
  ...extra,
});

async function decodedHeader(h: StreamHeader): Promise<StreamHeader> {
  const encoder = new DeltaStreamEncoder(h);
  async function* source() {
    yield encoder.start();
    for (const b of encoder.end()) yield b;
  }
  const { header: decoded, frames } = await decodeDeltaStream(source());
  for await (const _ of frames);
  return decoded;
}

describe('application-consistent points: config, stream header, state', function () {
  this.timeout(30_000);

  it('a protection is crash-consistent unless it asks, with a 10 s freeze timeout by default', () => {
    const [p] = parseConfig(config(''), 'vmdr.yaml').protections;
    assert.equal(p!.consistency, 'crash');
    assert.equal(p!.freezeTimeout, 10_000);
    const [app] = parseConfig(config('    consistency: application\n    freezeTimeout: 3s\n'), 'vmdr.yaml').protections;
    assert.equal(app!.consistency, 'application');
    assert.equal(app!.freezeTimeout, 3_000);
  });

  it('refuses another consistency, and a freeze timeout out of 1 s to 60 s, naming the place', () => {
    assert.equal(refusedConfig(config('    consistency: app\n')), 'vmdr.yaml:9:18: protections[0].consistency: expected one of "crash", "application"');
    assert.equal(refusedConfig(config('    freezeTimeout: 2m\n')), 'vmdr.yaml:9:20: protections[0].freezeTimeout: a duration from 1s to 60s');
    assert.equal(refusedConfig(config('    freezeTimeout: 0s\n')), 'vmdr.yaml:9:20: protections[0].freezeTimeout: a duration from 1s to 60s');
    assert.match(refusedConfig(config('    freezeTimeout: 500ms\n')), /^vmdr\.yaml:9:20: protections\[0\]\.freezeTimeout: a duration such as 30s/);
  });

  it('the stream header carries the consistency, its issue and the freeze window; a malformed one is refused', async () => {
    const issue = { code: 'thaw-timed-out', message: 'no thaw of VM "web" answered within 3 s (3 attempts)' };
    const decoded = await decodedHeader(header({ consistency: 'application', consistencyIssue: issue, freezeWindowMs: 3021 }));
    assert.deepEqual([decoded.consistency, decoded.consistencyIssue, decoded.freezeWindowMs], ['application', issue, 3021]);
    const plain = await decodedHeader(header());
    assert.equal(plain.consistency, undefined);

    for (const bad of [{ consistency: 'database' }, { consistencyIssue: { code: 'Freeze Failed', message: 'x' } }, { freezeWindowMs: -1 }]) {
      const err = await decodedHeader(header(bad as Partial<StreamHeader>)).then(
        () => assert.fail(`accepted ${JSON.stringify(bad)}`),
        (e: unknown) => e,
      );
      assert.ok(err instanceof StreamError);
      assert.equal(err.code, 'STREAM_BAD_HEADER');
    }
  });

  describe('the replica store', () => {
    let lab: Lab;
    beforeEach(async () => {
      lab = await makeLab();
    });
    afterEach(() => lab.cleanup());

    it('records what a point was given, and a plain crash-consistent point without it', async () => {
      const commit = async (consistency?: Parameters<Awaited<ReturnType<Lab['replicas']['beginPoint']>>['commit']>[0]['consistency']) => {
        const pending = await lab.replicas.beginPoint('web', [{ name: 'vda', sizeBytes: MiB }]);
        return pending.commit({ time: new Date(), checkpoint: 'c', since: null, kind: 'full', bytesShipped: 1, dataBytes: 1, zeroBytes: 0, ...(consistency ? { consistency } : {}) });
      };
      await commit({ consistency: 'application', consistencyIssue: null, freezeWindowMs: 84 });
      await commit({ consistency: 'crash', consistencyIssue: { code: 'no-agent-channel', message: 'VM "web" has no QEMU guest agent channel' }, freezeWindowMs: null });
      await commit();
      const points = lab.replicas.listPoints('web').map((p) => [p.id, p.consistency, p.consistencyIssue?.code ?? null, p.freezeWindowMs, describeConsistency(p)]);
      assert.deepEqual(points, [
        ['rp-1', 'application', null, 84, 'application (frozen 84 ms)'],
        ['rp-2', 'crash', 'no-agent-channel', null, 'crash (no-agent-channel)'],
        ['rp-3', 'crash', null, null, 'crash'],
      ]);
    });

    it('reads the points of a state file from before the consistency columns as crash-consistent', () => {
      const path = join(lab.root, 'v8.db');
      const old = new Database(path);
      migrations.slice(0, 8).forEach((m, i) => {
        old.exec(m);
        old.pragma(`user_version = ${i + 1}`);
      });
      old.prepare(`INSERT INTO recovery_points (protection, seq, time_ms, committed_at_ms, checkpoint, since, kind, bytes_shipped, data_bytes, zero_bytes)
        VALUES ('web', 1, 1, 2, 'c1', NULL, 'full', 1, 1, 0)`).run();
      old.close();
      const store = StateStore.open(path);
      try {
        const row = store.db.prepare('SELECT consistency, consistency_issue, freeze_window_ms FROM recovery_points').get();
        assert.deepEqual(row, { consistency: 'crash', consistency_issue: null, freeze_window_ms: null });
        assert.throws(() => store.db.prepare("UPDATE recovery_points SET consistency = 'app'").run(), /CHECK constraint failed/);
      } finally {
        store.close();
      }
    });
  });
});
