/**
 * `vmdr token create|list|revoke` as an operator runs them (the built CLI, a real state file): the
 * secret is printed once, lists never hold it, a revoke holds at the next request, and each change
 * is in the audit record under the OS user who made it.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { listAudit } from '../../../plugin/state/audit.js';
import { StateStore } from '../../../plugin/state/store.js';
import { TokenRefused } from '../../../plugin/tenants/token-errors.js';
import { readTokenFromEnvironment } from '../../../plugin/tenants/token-source.js';
import { authenticate, listTokens, parseToken } from '../../../plugin/tenants/tokens.js';
import { assertOneLineError } from '../../helpers/assertions.js';
import { runVmdr } from '../../helpers/lab.js';

describe('vmdr token', function () {
  this.timeout(60_000);
  let dir: string;
  let config: string;
  let stateFile: string;
  const vmdr = (...args: string[]) => runVmdr([...args, '--config', config]);
  const withState = <T>(work: (s: StateStore) => T): T => {
    const s = StateStore.open(stateFile);
    try {
      return work(s);
    } finally {
      s.close();
    }
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-cli-token-'));
    config = join(dir, 'vmdr.yaml');
    stateFile = join(dir, 'state', 'vmdr.db');
    await writeFile(
      config,
      `version: 1
state: { path: ${stateFile} }
sites:
  - { name: source, uri: "test:///default" }
tenants:
  - { name: acme }
  - { name: globex }
`,
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('prints a new token once, alone on stdout, and says on stderr that it will not be shown again', async () => {
    const r = await vmdr('token', 'create', '--name', 'acme-portal', '--tenant', 'acme', '--role', 'operate', '--expires', '90d');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^vmdr_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n$/);
    const token = r.stdout.trim();
    const id = parseToken(token)!.id;
    const stderr = r.stderr.trim().split('\n');
    assert.equal(stderr.length, 1);
    assert.match(stderr[0]!, new RegExp(`^token ${id} "acme-portal" \\(role operate, tenant acme, expires \\S+\\) created\\. This is the only time it is shown: it will not be shown again\\.$`));
    assert.ok(!r.stderr.includes(token.slice(18)));
    const expires = Date.parse(/expires (\S+)\)/.exec(stderr[0]!)![1]!);
    assert.ok(Math.abs(expires - (Date.now() + 90 * 86_400_000)) < 60_000, 'expires in 90 days');

    const principal = withState((s) => authenticate(s, `Bearer ${token}`));
    assert.deepEqual(principal, { tokenId: id, tokenName: 'acme-portal', role: 'operate', tenant: 'acme' });
    // The file that holds its hash is its owner's alone.
    assert.equal((await stat(stateFile)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'state'))).mode & 0o777, 0o700);
  });

  it('gives the token in JSON with --json; an operator token by default, of role read', async () => {
    const r = await vmdr('token', 'create', '--name', 'ops', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const made = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(
      { ...made, id: typeof made.id, token: typeof made.token, createdAt: typeof made.createdAt },
      { id: 'string', name: 'ops', tenant: null, role: 'read', createdAt: 'string', expiresAt: null, revokedAt: null, state: 'active', token: 'string', shownOnce: true },
    );
    assert.equal(withState((s) => authenticate(s, `Bearer ${made.token as string}`)).role, 'read');
  });

  it('lists tokens without their secrets or hashes; revoke holds from the next request on', async () => {
    const made = JSON.parse((await vmdr('token', 'create', '--name', 'globex-ci', '--tenant', 'globex', '--json')).stdout) as { id: string; token: string };
    const secret = parseToken(made.token)!.secret;
    const hash = createHash('sha256').update(secret).digest();
    const list = await vmdr('token', 'list');
    const listJson = await vmdr('token', 'list', '--json');
    const globex = await vmdr('token', 'list', '--tenant', 'globex', '--json');
    for (const r of [list, listJson, globex]) {
      assert.equal(r.code, 0, r.stderr);
      for (const leak of [made.token, made.token.slice(18), secret.toString('hex'), hash.toString('hex'), hash.toString('base64'), hash.toString('base64url')]) {
        assert.ok(!r.stdout.includes(leak), `list shows ${leak}`);
      }
    }
    assert.match(list.stdout, /^ID\s+NAME\s+TENANT\s+ROLE\s+CREATED\s+EXPIRES\s+STATE\n/);
    assert.match(list.stdout, new RegExp(`^${made.id}\\s+globex-ci\\s+globex\\s+read\\s+\\S+\\s+-\\s+active$`, 'm'));
    assert.match(list.stdout, /^[0-9a-f]{12}\s+ops\s+\(operator\)\s+read\s/m);
    assert.deepEqual((JSON.parse(listJson.stdout) as { name: string }[]).map((t) => t.name), ['acme-portal', 'ops', 'globex-ci']);
    assert.deepEqual((JSON.parse(globex.stdout) as { name: string }[]).map((t) => t.name), ['globex-ci']);

    const revoked = await vmdr('token', 'revoke', made.id);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`^token ${made.id} "globex-ci" \\(role read, tenant globex, no expiry\\) revoked: its requests are refused from now on\\n$`));
    const err = withState((s) => {
      try {
        authenticate(s, `Bearer ${made.token}`);
      } catch (e) {
        return e;
      }
    });
    assert.ok(err instanceof TokenRefused);
    assert.equal(err.code, 'TOKEN_REVOKED');
    const again = await vmdr('token', 'revoke', made.id);
    assert.match(again.stdout, /was already revoked at \S+\n$/);
    assert.match((await vmdr('token', 'list', '--tenant', 'globex')).stdout, new RegExp(`^${made.id}\\s.*\\srevoked \\S+$`, 'm'));
  });

  it('refuses an unknown tenant, a bad expiry and an unknown id in one line, exit 1; takes no token in argv', async () => {
    assertOneLineError(await vmdr('token', 'create', '--name', 'x', '--tenant', 'initech'), new RegExp(`^vmdr: ${config}: no tenant "initech" \\(\`vmdr tenant list\` shows the tenants\\)$`));
    assertOneLineError(await vmdr('token', 'create', '--name', 'x', '--expires', 'soon'), /^vmdr: --expires: "soon" is not a duration such as 30s, 15m, 4h or 7d$/);
    assertOneLineError(await vmdr('token', 'create', '--name', 'x', '--expires', '20y'), /^vmdr: --expires: "20y" is not a duration/);
    assertOneLineError(await vmdr('token', 'create', '--name', '../x'), /^vmdr: name: "\.\.\/x" is not a name of letters/);
    assertOneLineError(await vmdr('token', 'revoke', 'nope'), /^vmdr: no token "nope"$/);
    const json = await vmdr('token', 'create', '--name', 'x', '--tenant', 'initech', '--json');
    assert.equal(json.code, 1);
    assert.equal((JSON.parse(json.stderr) as { error: { code: string } }).error.code, 'TENANT_UNKNOWN');
    // There is no option that takes a token's value.
    const flag = await vmdr('token', 'list', '--token', 'vmdr_0123456789ab_x');
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /Unknown argument: token/);
  });

  it('writes the token into a new 0600 file with --out, never over an existing one, and leaves no file when refused', async () => {
    const file = join(dir, 'acme.token');
    const r = await vmdr('token', 'create', '--name', 'acme-file', '--tenant', 'acme', '--out', file);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^token [0-9a-f]{12} "acme-file" \\(role read, tenant acme, no expiry\\) created and written to ${file} \\(mode 0600\\): it is not kept anywhere else\\.\n$`));
    assert.equal(r.stderr, '');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const token = await readTokenFromEnvironment({ env: { VMDR_TOKEN_FILE: file } });
    assert.equal(withState((s) => authenticate(s, `Bearer ${token}`)).tokenName, 'acme-file');

    const count = () => withState((s) => listTokens(s).length);
    const before = count();
    assertOneLineError(await vmdr('token', 'create', '--name', 'again', '--out', file), new RegExp(`^vmdr: --out: ${file}: it exists already: a token file is never overwritten$`));
    assert.equal(await readFile(file, 'utf8'), `${token}\n`, 'the existing file is untouched');
    const refused = join(dir, 'refused.token');
    assertOneLineError(await vmdr('token', 'create', '--name', 'x', '--tenant', 'initech', '--out', refused), /no tenant "initech"/);
    await assert.rejects(stat(refused), { code: 'ENOENT' });
    assert.equal(count(), before, 'no token was made');
  });

  it('writes each create and revoke, and each refusal, to the audit record as the OS user', async () => {
    const user = userInfo().username;
    const records = withState((s) => listAudit(s, { limit: 100 })).reverse();
    assert.ok(records.every((r) => r.actor === 'cli' && r.actorName === user));
    assert.deepEqual(
      records.map((r) => [r.action, r.tenant, r.result, r.code]),
      [
        ['token.create', 'acme', 'ok', undefined],
        ['token.create', undefined, 'ok', undefined],
        ['token.create', 'globex', 'ok', undefined],
        ['token.revoke', 'globex', 'ok', undefined],
        ['token.revoke', 'globex', 'ok', undefined],
        ['token.create', 'initech', 'refused', 'TENANT_UNKNOWN'],
        ['token.create', undefined, 'refused', 'TOKEN_REQUEST_INVALID'],
        ['token.create', undefined, 'refused', 'TOKEN_REQUEST_INVALID'],
        ['token.create', undefined, 'refused', 'TOKEN_REQUEST_INVALID'],
        ['token.revoke', undefined, 'refused', 'TOKEN_UNKNOWN'],
        ['token.create', 'initech', 'refused', 'TENANT_UNKNOWN'],
        ['token.create', 'acme', 'ok', undefined],
        ['token.create', 'initech', 'refused', 'TENANT_UNKNOWN'],
      ],
    );
    const created = records.filter((r) => r.action === 'token.create' && r.result === 'ok').map((r) => r.object);
    assert.ok(created.every((id) => /^[0-9a-f]{12}$/.test(id ?? '')), 'a created token is named by its id');
    // The secrets are in no record.
    assert.doesNotMatch(await readFile(stateFile, 'latin1'), /vmdr_[0-9a-f]{12}_/);
  });
});
