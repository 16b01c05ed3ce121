/**
 * editConfig, the one way vmdr changes its config file: what the operator wrote survives, an
 * invalid result never reaches the disk, two processes editing at once both land, and a process
 * killed mid-edit leaves the old or the new config, whole.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, lstat, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appendItem, editConfig, removeNamedItems } from '../../../plugin/config/edit.js';
import { loadConfig } from '../../../plugin/config/load.js';
import { rejectsWith } from '../../helpers/assertions.js';

const EDITOR = join(import.meta.dirname, '..', '..', 'helpers', 'config-editor.ts');

const COMMENTED = `# vmdr config of the lab: keep these comments
version: 1
sites:
  - name: prod # the source site
    uri: "test:///default"
  # the DR site, on the same host here
  - { name: dr, uri: "test:///default" }
tenants:
  - name: acme # first customer
    description: "ACME Corp, a description long enough that a YAML writer folding at eighty columns would break it over lines"
    networks: []
# end of file
`;

function editor(file: string, prefix: string, count: number, holdMs = 0): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', EDITOR, file, prefix, String(count), String(holdMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
}

async function exitOf(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stderr };
}

describe('editConfig', function () {
  this.timeout(60_000);
  let dir: string;
  let file: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-edit-'));
    file = join(dir, 'vmdr.yaml');
    await writeFile(file, COMMENTED);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("keeps the operator's comments, order and long lines, and adds what the change adds", async () => {
    const { changed, config } = await editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'globex', networks: ['vmdr-t6-globex-dr'] }));
    assert.equal(changed, true);
    assert.deepEqual(config.tenants.map((t) => t.name), ['acme', 'globex']);
    const text = await readFile(file, 'utf8');
    for (const line of COMMENTED.trimEnd().split('\n').filter((l) => l.includes('#') || l.includes('description'))) {
      assert.ok(text.includes(line.trim()), `kept: ${line}`);
    }
    assert.ok(text.indexOf('# the source site') < text.indexOf('- name: globex'));
    assert.deepEqual((await loadConfig(file)).config.tenants.map((t) => t.name), ['acme', 'globex']);
  });

  it('makes a list the config lacks, and takes items out by name', async () => {
    await writeFile(file, 'version: 1\nsites:\n  - { name: dr, uri: "test:///default" }\n');
    await editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'a' }));
    await editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'b' }));
    await editConfig(file, (doc, config) => removeNamedItems(doc, 'tenants', config.tenants, new Set(['a'])));
    assert.deepEqual((await loadConfig(file)).config.tenants.map((t) => t.name), ['b']);
    assert.match(await readFile(file, 'utf8'), /^tenants:\n {2}- name: b\n/m);
  });

  it('refuses a result the schema refuses, naming the path, and leaves the file as it was', async () => {
    const before = await readFile(file);
    const err = await rejectsWith(editConfig(file, (doc) => appendItem(doc, 'tenants', { name: '../evil' })), 'CONFIG_INVALID');
    assert.equal(err.message, `${file}: tenants[1].name: a name of letters, digits, ".", "-" or "_" (at most 63) (the change was refused; the file is unchanged)`);
    assert.deepEqual(await readFile(file), before);
    // A reference check too: a protection of a tenant that does not exist.
    await rejectsWith(
      editConfig(file, (doc) =>
        appendItem(doc, 'protections', { name: 'web', tenant: 'nobody', source: { site: 'prod', vm: 'web' }, target: { site: 'dr', vm: 'web-dr', nics: [{ network: 'n' }] } }),
      ),
      'CONFIG_INVALID',
    );
    assert.deepEqual(await readFile(file), before);
    assert.deepEqual(await readdir(dir), ['vmdr.yaml', 'vmdr.yaml.lock'], 'no temporary file left');
  });

  it('writes nothing when the mutation refuses, and releases the lock', async () => {
    const before = await readFile(file);
    await assert.rejects(
      editConfig(file, () => {
        throw new Error('refused');
      }),
      /refused/,
    );
    assert.deepEqual(await readFile(file), before);
    assert.equal((await editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'after' }))).changed, true);
  });

  it('keeps the mode of the file and edits a symlinked config where it points', async () => {
    await chmod(file, 0o640);
    const link = join(dir, 'link.yaml');
    await symlink(file, link);
    await editConfig(link, (doc) => appendItem(doc, 'tenants', { name: 'b' }));
    assert.equal((await stat(file)).mode & 0o777, 0o640);
    assert.ok((await lstat(link)).isSymbolicLink());
    assert.equal(await readlink(link), file);
    assert.deepEqual((await loadConfig(file)).config.tenants.map((t) => t.name), ['acme', 'b']);
  });

  it('serializes two processes editing at once: every change of both lands', async () => {
    const [a, b] = [editor(file, 'a', 15), editor(file, 'b', 15)];
    const results = await Promise.all([exitOf(a), exitOf(b)]);
    for (const r of results) assert.equal(r.code, 0, r.stderr);
    const names = (await loadConfig(file)).config.tenants.map((t) => t.name);
    assert.equal(names.length, 31);
    for (const p of ['a', 'b']) for (let i = 0; i < 15; i++) assert.ok(names.includes(`${p}-${i}`), `${p}-${i} landed`);
  });

  it('refuses with CONFIG_LOCKED, naming the holder, when another edit holds the lock past the wait', async () => {
    const holder = editor(file, 'slow', 1, 3_000);
    const done = exitOf(holder);
    await once(holder.stdout!, 'data');
    const started = Date.now();
    const err = await rejectsWith(editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'fast' }), { lockWaitMs: 300 }), 'CONFIG_LOCKED');
    assert.ok(Date.now() - started < 2_000, 'gave up after the wait');
    assert.equal(err.message, `${file}: another change of this config holds its lock (${file}.lock) by process ${holder.pid}; waited 0.3 s`);
    assert.equal((await done).code, 0);
    // Once it is done, the edit goes through.
    await editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'fast' }));
    assert.deepEqual((await loadConfig(file)).config.tenants.map((t) => t.name), ['acme', 'slow-0', 'fast']);
  });

  it('leaves the old config or the new one, whole, when the editing process is killed at any moment', async () => {
    const rounds = 8;
    for (let round = 0; round < rounds; round++) {
      const child = editor(file, `k${round}`, 1000);
      const exited = once(child, 'exit');
      // Once its third edit is written, at a moment that differs each round: inside an edit, or between two.
      let out = '';
      await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => (out += d.toString()).includes('edited 2\n') && resolve()));
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 40));
      child.kill('SIGKILL');
      await exited;
      const { config } = await loadConfig(file);
      assert.equal(config.tenants[0]!.name, 'acme');
      for (let i = 0; i <= 2; i++) assert.ok(config.tenants.some((t) => t.name === `k${round}-${i}`), `k${round}-${i} landed before the kill`);
    }
    // An edit after the kills finds any temporary file left by a killed one and removes it.
    await editConfig(file, (doc) => appendItem(doc, 'tenants', { name: 'last' }));
    assert.deepEqual((await readdir(dir)).sort(), ['vmdr.yaml', 'vmdr.yaml.lock']);
  });
});
