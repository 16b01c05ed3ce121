/**
 * API tokens against a real SQLite state file: what a request with each kind of token is told,
 * and what the file on disk holds (a hash, never the secret).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmdrError } from '../../../hypervisors/errors.js';
import { StateStore } from '../../../plugin/state/store.js';
import { TokenRefused } from '../../../plugin/tenants/token-errors.js';
import {
  authenticate,
  canSee,
  createToken,
  findToken,
  listTokens,
  parseToken,
  requireRole,
  requireTenant,
  revokeTenantTokens,
  revokeToken,
  tokenState,
  type Principal,
} from '../../../plugin/tenants/tokens.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');

/** The error `authenticate` throws, or a failure when it lets the header in. */
function refusal(store: StateStore, header: string | undefined, now?: Date): TokenRefused {
  try {
    authenticate(store, header, now);
  } catch (err) {
    assert.ok(err instanceof TokenRefused, `expected a TokenRefused, got ${String(err)}`);
    return err;
  }
  assert.fail(`${header} was let in`);
}

describe('API tokens (plugin/tenants/tokens.ts)', () => {
  let root: string;
  let store: StateStore;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'test-vmdr-tokens-'));
    store = StateStore.open(join(root, 'state', 'vmdr.db'));
  });
  afterEach(async () => {
    store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('makes a token shown as vmdr_<id>_<secret> that authenticates as its principal', () => {
    const operator = createToken(store, { name: 'portal', role: 'operate' });
    assert.match(operator.token, /^vmdr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    assert.equal(parseToken(operator.token)!.secret.length, 32, '256 bits of secret');
    assert.deepEqual(authenticate(store, `Bearer ${operator.token}`), { tokenId: operator.record.id, tokenName: 'portal', role: 'operate' });

    const tenant = createToken(store, { name: 'acme-ro', tenant: 'acme', role: 'read' });
    assert.deepEqual(authenticate(store, `bearer ${tenant.token}`), { tokenId: tenant.record.id, tokenName: 'acme-ro', role: 'read', tenant: 'acme' });
    assert.notEqual(tenant.record.id, operator.record.id);
    assert.notEqual(parseToken(tenant.token)!.secret.toString('hex'), parseToken(operator.token)!.secret.toString('hex'));

    assert.deepEqual(
      listTokens(store).map((t) => [t.id, t.name, t.tenant, t.role]),
      [
        [operator.record.id, 'portal', undefined, 'operate'],
        [tenant.record.id, 'acme-ro', 'acme', 'read'],
      ],
    );
    assert.deepEqual(listTokens(store, { tenant: 'acme' }).map((t) => t.id), [tenant.record.id]);
    // A record never carries the secret or its hash: lists and API answers are made of records.
    assert.doesNotMatch(JSON.stringify(listTokens(store)), /secret|sha256|vmdr_/i);
  });

  it('refuses no token with TOKEN_MISSING, and malformed, unknown and wrong-secret tokens with the same TOKEN_INVALID', () => {
    const { token, record } = createToken(store, { name: 'ci', role: 'operate' });
    for (const header of [undefined, '', '   ']) assert.equal(refusal(store, header).code, 'TOKEN_MISSING');

    const secret = parseToken(token)!.secret;
    const flipped = Buffer.from(secret);
    flipped[0]! ^= 1;
    const otherId = record.id === '000000000000' ? '000000000001' : '000000000000';
    const invalid = {
      'wrong secret, right id': `Bearer vmdr_${record.id}_${flipped.toString('base64url')}`,
      'unknown id, right secret': `Bearer vmdr_${otherId}_${secret.toString('base64url')}`,
      'no Bearer scheme': token,
      'another scheme': `Basic ${token}`,
      'not a token': 'Bearer hunter2',
      'secret cut short': `Bearer ${token.slice(0, -1)}`,
      'its last character changed': `Bearer ${token.slice(0, -1)}${String.fromCharCode(token.charCodeAt(token.length - 1) + 1)}`,
      'trailing garbage': `Bearer ${token} x`,
      'huge header': `Bearer ${token}${'A'.repeat(10_000)}`,
    };
    const answers = Object.entries(invalid).map(([why, header]) => {
      const err = refusal(store, header);
      return [why, err.code, err.message, err.status, JSON.stringify(err.subject)];
    });
    for (const [why, ...answer] of answers) assert.deepEqual(answer, ['TOKEN_INVALID', 'the token is not valid', 401, '{}'], String(why));
    // Still fine with the right secret after all that.
    assert.equal(authenticate(store, `Bearer ${token}`).tokenId, record.id);
  });

  it('compares the secret in constant time against a stored SHA-256, also when the id is unknown', async () => {
    const source = await readFile(join(ROOT, 'plugin', 'tenants', 'tokens.ts'), 'utf8');
    const body = source.slice(source.indexOf('export function authenticate'), source.indexOf('export function requireRole'));
    assert.match(body, /timingSafeEqual\(sha256\(presented\?\.secret \?\? Buffer\.alloc\(SECRET_BYTES\)\), row\?\.secretSha256 \?\? NO_HASH\)/);
    // The comparison comes before any answer about the row: no early return for an unknown id.
    assert.ok(body.indexOf('timingSafeEqual') < body.indexOf('throw new TokenInvalid'));
    assert.doesNotMatch(body, /===\s*row\.secret|row\.secretSha256\.equals|Buffer\.compare/);
  });

  it('keeps the hash in the state file, never the secret', async () => {
    const made = [createToken(store, { name: 'a', role: 'operate' }), createToken(store, { name: 'b', tenant: 'acme', role: 'read' })];
    const files = [store.path, `${store.path}-wal`, `${store.path}-shm`];
    const bytes = async () => Buffer.concat(await Promise.all(files.map((f) => readFile(f).catch(() => Buffer.alloc(0)))));
    const check = async (when: string) => {
      const all = await bytes();
      for (const { token } of made) {
        const secret = parseToken(token)!.secret;
        assert.equal(all.indexOf(token), -1, `${when}: the token text is in the state files`);
        assert.equal(all.indexOf(token.slice(18)), -1, `${when}: the secret's text is in the state files`);
        assert.equal(all.indexOf(secret), -1, `${when}: the secret's bytes are in the state files`);
        assert.notEqual(all.indexOf(createHash('sha256').update(secret).digest()), -1, `${when}: its SHA-256 is`);
      }
    };
    await check('in the WAL');
    store.db.pragma('wal_checkpoint(TRUNCATE)');
    await check('checkpointed');
    // The file that holds the hashes is its owner's alone, in a directory of its owner's.
    assert.equal((await stat(join(root, 'state'))).mode & 0o777, 0o700);
    for (const f of files) {
      const mode = await stat(f).then((s) => s.mode & 0o777, () => undefined);
      if (mode !== undefined) assert.equal(mode, 0o600, f);
    }
  });

  it('refuses a revoked token from the next request on, with TOKEN_REVOKED', () => {
    const { token, record } = createToken(store, { name: 'ci', tenant: 'acme', role: 'operate' });
    const other = createToken(store, { name: 'other', tenant: 'acme', role: 'read' });
    assert.equal(authenticate(store, `Bearer ${token}`).tokenId, record.id);
    const revoked = revokeToken(store, record.id);
    assert.equal(revoked.alreadyRevoked, false);
    assert.ok(revoked.record.revokedAt instanceof Date);
    const err = refusal(store, `Bearer ${token}`);
    assert.deepEqual([err.code, err.status, err.message], ['TOKEN_REVOKED', 401, `token ${record.id} was revoked`]);
    // A wrong secret for a revoked id says nothing of the revoke.
    assert.equal(refusal(store, `Bearer vmdr_${record.id}_${'A'.repeat(42)}A`).code, 'TOKEN_INVALID');
    // Again: nothing changes, the first time is kept.
    const again = revokeToken(store, record.id, new Date(Date.now() + 60_000));
    assert.equal(again.alreadyRevoked, true);
    assert.equal(again.record.revokedAt!.getTime(), revoked.record.revokedAt!.getTime());
    assert.equal(tokenState(again.record), 'revoked');
    assert.equal(findToken(store, record.id)!.revokedAt!.getTime(), revoked.record.revokedAt!.getTime());
    assert.equal(findToken(store, 'nope'), undefined);
    assert.equal(authenticate(store, `Bearer ${other.token}`).tokenId, other.record.id, 'the other token is untouched');
    assert.throws(() => revokeToken(store, 'nope'), (e: unknown) => e instanceof VmdrError && e.code === 'TOKEN_UNKNOWN' && e.message === 'no token "nope"');
  });

  it("revokes every token of a tenant (the tenant's removal), and no other", () => {
    const a = createToken(store, { name: 'a', tenant: 'acme', role: 'operate' });
    const b = createToken(store, { name: 'b', tenant: 'acme', role: 'read' });
    const c = createToken(store, { name: 'c', tenant: 'globex', role: 'read' });
    revokeToken(store, b.record.id);
    assert.equal(revokeTenantTokens(store, 'acme'), 1);
    assert.equal(refusal(store, `Bearer ${a.token}`).code, 'TOKEN_REVOKED');
    assert.equal(authenticate(store, `Bearer ${c.token}`).tenant, 'globex');
  });

  it('refuses an expired token with TOKEN_EXPIRED from its expiry on (a `now` argument, no sleeps)', () => {
    const created = new Date('2026-01-01T00:00:00Z');
    const expiresAt = new Date('2026-04-01T00:00:00Z');
    const { token, record } = createToken(store, { name: 'q1', role: 'read', expiresAt }, created);
    assert.equal(record.expiresAt!.getTime(), expiresAt.getTime());
    assert.equal(authenticate(store, `Bearer ${token}`, new Date(expiresAt.getTime() - 1)).tokenId, record.id);
    for (const now of [expiresAt, new Date(expiresAt.getTime() + 86_400_000)]) {
      const err = refusal(store, `Bearer ${token}`, now);
      assert.deepEqual([err.code, err.status, err.message], ['TOKEN_EXPIRED', 401, `token ${record.id} expired at 2026-04-01T00:00:00.000Z`]);
    }
    assert.equal(tokenState(record, new Date(expiresAt.getTime() - 1)), 'active');
    assert.equal(tokenState(record, expiresAt), 'expired');
    // An expiry already past, a bad name or role: refused before anything is stored.
    const bad = (request: Parameters<typeof createToken>[1], field: string) =>
      assert.throws(() => createToken(store, request, created), (e: unknown) => e instanceof VmdrError && e.code === 'TOKEN_REQUEST_INVALID' && e.subject.field === field);
    bad({ name: 'late', role: 'read', expiresAt: created }, 'expiresAt');
    bad({ name: '../etc', role: 'read' }, 'name');
    bad({ name: 'x\ny', role: 'read' }, 'name');
    bad({ name: 'ok', tenant: 'a/b', role: 'read' }, 'tenant');
    bad({ name: 'ok', role: 'admin' as 'read' }, 'role');
    assert.equal(listTokens(store).length, 1);
  });

  it('lets only operate tokens change things (TOKEN_READ_ONLY, 403), and a tenant token see only its tenant', () => {
    const operator: Principal = { tokenId: 'o', tokenName: 'ops', role: 'operate' };
    const reader: Principal = { tokenId: 'r', tokenName: 'acme-ro', role: 'read', tenant: 'acme' };
    const acme: Principal = { tokenId: 'w', tokenName: 'acme-rw', role: 'operate', tenant: 'acme' };
    requireRole(operator, 'operate');
    requireRole(acme, 'operate');
    requireRole(reader, 'read');
    assert.throws(
      () => requireRole(reader, 'operate'),
      (e: unknown) => e instanceof TokenRefused && e.code === 'TOKEN_READ_ONLY' && e.status === 403,
    );
    const table = [operator, reader].flatMap((p) =>
      [undefined, 'acme', 'globex'].map((object) => `${p.tenant ?? 'operator'} sees ${object ?? 'no tenant'}: ${canSee(p, object)}`),
    );
    assert.deepEqual(table, [
      'operator sees no tenant: true',
      'operator sees acme: true',
      'operator sees globex: true',
      'acme sees no tenant: false',
      'acme sees acme: true',
      'acme sees globex: false',
    ]);
  });

  it('refuses a tenant the config does not declare: naming the config for the CLI, as an unknown object for the API', () => {
    const config = { tenants: [{ name: 'acme', networks: [] }] } as unknown as Parameters<typeof requireTenant>[0];
    requireTenant(config, 'acme');
    const api = (() => {
      try {
        requireTenant(config, 'globex');
      } catch (e) {
        return e as VmdrError;
      }
    })()!;
    assert.deepEqual([api.code, api.message, api.remedy, api.subject], ['TENANT_UNKNOWN', 'no tenant "globex"', undefined, { tenant: 'globex' }]);
    assert.throws(() => requireTenant(config, 'globex', '/etc/vmdr.yaml'), { code: 'TENANT_UNKNOWN', message: '/etc/vmdr.yaml: no tenant "globex"' });
  });

  it('reads every request afresh: a token revoked through another handle is refused on the next call', async () => {
    const { token, record } = createToken(store, { name: 'long', role: 'operate' });
    assert.equal(authenticate(store, `Bearer ${token}`).tokenId, record.id);
    const cli = StateStore.open(store.path);
    try {
      revokeToken(cli, record.id);
    } finally {
      cli.close();
    }
    assert.equal(refusal(store, `Bearer ${token}`).code, 'TOKEN_REVOKED');
  });

  it('takes a few microseconds per request', () => {
    const { token } = createToken(store, { name: 'bench', role: 'read' });
    const header = `Bearer ${token}`;
    const n = 20_000;
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) authenticate(store, header);
    const us = Number(process.hrtime.bigint() - start) / 1000 / n;
    console.log(`      authenticate: ${us.toFixed(1)} µs per request (${n} requests)`);
    assert.ok(us < 500, `${us} µs`);
  });

  it('never puts a presented secret into an error', () => {
    const { token } = createToken(store, { name: 'x', role: 'read' });
    const err = refusal(store, `Bearer ${token.slice(0, -2)}AA`);
    assert.doesNotMatch(`${err.message} ${JSON.stringify(err.toJSON())}`, /vmdr_|[A-Za-z0-9_-]{40}/);
  });
});
