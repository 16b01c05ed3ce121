import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmdrError } from '../../../hypervisors/errors.js';
import { readTokenFromEnvironment } from '../../../plugin/tenants/token-source.js';

const TOKEN = `vmdr_0123456789ab_${Buffer.alloc(32, 7).toString('base64url')}`;

async function refused(promise: Promise<unknown>, code: string): Promise<VmdrError> {
  const err = await promise.then(
    () => assert.fail(`expected ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof VmdrError && err.code === code, `expected ${code}, got ${String(err)}`);
  assert.doesNotMatch(err.message, /\n/);
  assert.ok(!err.message.includes(TOKEN.slice(18)), 'the message never holds the token');
  return err;
}

describe('where a client takes its token from (readTokenFromEnvironment)', () => {
  let dir: string;
  let file: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-token-source-'));
    file = join(dir, 'token');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('takes VMDR_TOKEN, or a 0600 file named by VMDR_TOKEN_FILE or --token-file; none: undefined', async () => {
    await writeFile(file, `${TOKEN}\n`);
    await chmod(file, 0o600);
    assert.equal(await readTokenFromEnvironment({ env: {} }), undefined);
    assert.equal(await readTokenFromEnvironment({ env: { VMDR_TOKEN: TOKEN } }), TOKEN);
    assert.equal(await readTokenFromEnvironment({ env: { VMDR_TOKEN_FILE: file } }), TOKEN);
    assert.equal(await readTokenFromEnvironment({ env: {}, tokenFile: file }), TOKEN);
    await chmod(file, 0o400);
    assert.equal(await readTokenFromEnvironment({ env: { VMDR_TOKEN: 'ignored: the option wins' }, tokenFile: file }), TOKEN);
  });

  it('refuses a token file that group or others may read, in one line naming the file and its mode', async () => {
    await writeFile(file, TOKEN);
    for (const mode of [0o644, 0o640, 0o604, 0o660]) {
      await chmod(file, mode);
      for (const options of [{ env: { VMDR_TOKEN_FILE: file } }, { env: {}, tokenFile: file }]) {
        const err = await refused(readTokenFromEnvironment(options), 'TOKEN_FILE_UNSAFE');
        const octal = mode.toString(8).padStart(4, '0');
        assert.match(err.message, new RegExp(`^token file ${file} \\((VMDR_TOKEN_FILE|--token-file)\\) has mode ${octal}: only its owner may have access to it, so it is not used$`));
        assert.equal(err.remedy, `chmod 600 ${file}, and make a new token if others may have read this one`);
      }
    }
  });

  it('refuses what holds no token, a missing file, a directory, and both variables at once', async () => {
    await writeFile(file, 'hunter2\n');
    await chmod(file, 0o600);
    await refused(readTokenFromEnvironment({ env: { VMDR_TOKEN_FILE: file } }), 'TOKEN_SOURCE_INVALID');
    await refused(readTokenFromEnvironment({ env: { VMDR_TOKEN: `${TOKEN}x` } }), 'TOKEN_SOURCE_INVALID');
    assert.match((await refused(readTokenFromEnvironment({ tokenFile: join(dir, 'none') }), 'TOKEN_FILE_UNREADABLE')).message, /: no such file$/);
    assert.match((await refused(readTokenFromEnvironment({ tokenFile: dir }), 'TOKEN_FILE_UNREADABLE')).message, /is not a regular file$/);
    await refused(readTokenFromEnvironment({ env: { VMDR_TOKEN: TOKEN, VMDR_TOKEN_FILE: file } }), 'TOKEN_SOURCE_AMBIGUOUS');
  });
});
