import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmdrError } from '../../../hypervisors/errors.js';
import { audited, listAudit, MAX_AUDIT_LIMIT, recordAudit } from '../../../plugin/state/audit.js';
import { StateStore } from '../../../plugin/state/store.js';

describe('the audit record (plugin/state/audit.ts)', () => {
  let root: string;
  let store: StateStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-audit-'));
    store = StateStore.open(join(root, 'vmdr.db'));
  });
  afterEach(async () => {
    store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('keeps who did what, when, to what, with what result; lists newest first, by tenant and since', () => {
    const t0 = Date.parse('2026-12-01T10:00:00Z');
    recordAudit(store, { actor: 'cli', actorName: 'root', action: 'token.create', object: 'aaaaaaaaaaaa', result: 'ok', at: new Date(t0) });
    recordAudit(store, { actor: 'bbbbbbbbbbbb', actorName: 'acme-rw', tenant: 'acme', action: 'protection.sync', object: 'web', result: 'ok', at: new Date(t0 + 1000) });
    recordAudit(store, {
      actor: 'cccccccccccc',
      actorName: 'globex-ro',
      tenant: 'globex',
      action: 'protection.sync',
      object: 'db',
      result: 'refused',
      code: 'TOKEN_READ_ONLY',
      at: new Date(t0 + 2000),
    });
    recordAudit(store, { actor: 'bbbbbbbbbbbb', actorName: 'acme-rw', tenant: 'acme', action: 'failover.start', object: 'web', result: 'failed', code: 'VM_NOT_FOUND', at: new Date(t0 + 3000) });

    const all = listAudit(store, { limit: 100 });
    assert.deepEqual(
      all.map((r) => [r.at.toISOString(), r.actor, r.actorName, r.tenant, r.action, r.object, r.result, r.code]),
      [
        ['2026-12-01T10:00:03.000Z', 'bbbbbbbbbbbb', 'acme-rw', 'acme', 'failover.start', 'web', 'failed', 'VM_NOT_FOUND'],
        ['2026-12-01T10:00:02.000Z', 'cccccccccccc', 'globex-ro', 'globex', 'protection.sync', 'db', 'refused', 'TOKEN_READ_ONLY'],
        ['2026-12-01T10:00:01.000Z', 'bbbbbbbbbbbb', 'acme-rw', 'acme', 'protection.sync', 'web', 'ok', undefined],
        ['2026-12-01T10:00:00.000Z', 'cli', 'root', undefined, 'token.create', 'aaaaaaaaaaaa', 'ok', undefined],
      ],
    );
    assert.deepEqual(listAudit(store, { tenant: 'acme', limit: 100 }).map((r) => r.action), ['failover.start', 'protection.sync']);
    assert.deepEqual(listAudit(store, { since: new Date(t0 + 2000), limit: 100 }).map((r) => r.object), ['web', 'db']);
    assert.deepEqual(listAudit(store, { tenant: 'acme', since: new Date(t0 + 2000), limit: 100 }).map((r) => r.action), ['failover.start']);
    assert.deepEqual(listAudit(store, { limit: 2 }).map((r) => r.object), ['web', 'db']);
  });

  it(`reads at most ${MAX_AUDIT_LIMIT} records at a time, whatever limit is asked`, () => {
    const insert = store.db.transaction(() => {
      for (let i = 0; i < MAX_AUDIT_LIMIT + 50; i++) recordAudit(store, { actor: 'cli', actorName: 'root', action: 'token.create', result: 'ok', at: new Date(i) });
    });
    insert();
    assert.equal(listAudit(store, { limit: 1_000_000 }).length, MAX_AUDIT_LIMIT);
    assert.equal(listAudit(store, { limit: Number.NaN }).length, 1);
    assert.equal(listAudit(store, { limit: -5 }).length, 1);
    assert.equal(listAudit(store, { limit: 3 })[0]!.at.getTime(), MAX_AUDIT_LIMIT + 49);
  });

  it('keeps the newest records only: a client that keeps being refused cannot grow the state file without bound', () => {
    store.db.transaction(() => {
      for (let i = 1; i <= 3000; i++) recordAudit(store, { actor: 'x', actorName: 'spam', action: 'protection.sync', object: `n${i}`, result: 'refused', at: new Date(i) }, 10);
    })();
    const left = store.db.prepare('SELECT COUNT(*) AS n, MIN(id) AS first FROM audit_records').get() as { n: number; first: number };
    assert.deepEqual(left, { n: 10, first: 2991 });
    assert.equal(listAudit(store, { limit: 1 })[0]!.object, 'n3000', 'the newest stays');
  });

  it('records what a piece of work came to: ok with what it learnt, refused or failed with the code, and passes the error on', async () => {
    const who = { actor: 'cli', actorName: 'root' };
    assert.equal(await audited(store, { ...who, action: 'token.create' }, () => ({ id: 'dddddddddddd' }), (r) => ({ object: r.id, tenant: 'acme' })).then((r) => r.id), 'dddddddddddd');
    await assert.rejects(
      audited(store, { ...who, action: 'token.revoke', object: 'nope' }, () => {
        throw new VmdrError('TOKEN_UNKNOWN', 'no token "nope"');
      }),
      (e: unknown) => e instanceof VmdrError && e.code === 'TOKEN_UNKNOWN',
    );
    await assert.rejects(
      audited(store, { ...who, action: 'protection.sync', object: 'web' }, async () => {
        throw new VmdrError('HYPERVISOR_UNREACHABLE', 'cannot reach', { userError: false });
      }),
    );
    await assert.rejects(audited(store, { ...who, action: 'protection.sync', object: 'db' }, () => JSON.parse('{')));
    assert.deepEqual(
      listAudit(store, { limit: 10 }).reverse().map((r) => [r.action, r.object, r.tenant, r.result, r.code]),
      [
        ['token.create', 'dddddddddddd', 'acme', 'ok', undefined],
        ['token.revoke', 'nope', undefined, 'refused', 'TOKEN_UNKNOWN'],
        ['protection.sync', 'web', undefined, 'failed', 'HYPERVISOR_UNREACHABLE'],
        ['protection.sync', 'db', undefined, 'failed', 'INTERNAL'],
      ],
    );
  });
});
