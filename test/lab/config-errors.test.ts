/**
 * `vmdr config check` on configs an operator (or an attacker with write access to one) could hand
 * it: each answer is one line naming the file, the place inside it and what was expected, exit 1,
 * no stack trace; and quickly, whatever the file holds.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertOneLineError } from '../helpers/assertions.js';
import { runVmdr } from '../helpers/lab.js';

const LAB = 'templates/examples/lab.yaml';
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('vmdr config check on a bad config', function () {
  this.timeout(120_000);
  let dir: string;
  let lab: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-config-errors-'));
    lab = await readFile(LAB, 'utf8');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const bomb = () => {
    const levels = 'abcdefghi'.split('');
    return [
      'version: 1',
      'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
      ...levels.slice(1).map((l, i) => `${l}: &${l} [${Array(9).fill(`*${levels[i]}`).join(', ')}]`),
      'sites: *i',
    ].join('\n');
  };
  const cases: { name: string; text: () => string; error: string }[] = [
    { name: 'an alias bomb', text: bomb, error: ':\\d+:\\d+: [a-i]\\[\\d+\\]: YAML aliases bring the config past 200000 values' },
    { name: 'a 2 MiB file', text: () => `${lab}#${'x'.repeat(2 * 1024 * 1024 - lab.length - 2)}\n`, error: ': 2097152 bytes: larger than 1 MiB, the most a config may have' },
    { name: 'port 0', text: () => lab.replace('listen: 127.0.0.1:8443', 'listen: 127.0.0.1:0'), error: ':16:15: sites\\[1\\]\\.endpoint\\.listen: host:port with a port from 1 to 65535' },
    { name: 'port 70000', text: () => lab.replace('listen: 127.0.0.1:8443', 'listen: 127.0.0.1:70000'), error: ':16:15: sites\\[1\\]\\.endpoint\\.listen: host:port with a port from 1 to 65535' },
    { name: 'rpo: 0m', text: () => lab.replace('rpo: 5m', 'rpo: 0m'), error: ':38:10: protections\\[0\\]\\.rpo: a duration from 1s to 30d' },
    { name: 'rpo: 31d', text: () => lab.replace('rpo: 5m', 'rpo: 31d'), error: ':38:10: protections\\[0\\]\\.rpo: a duration from 1s to 30d' },
    {
      name: 'a path with ".."',
      text: () => lab.replace('storage: /var/lib/vmdr/lab/replicas', 'storage: /var/lib/vmdr/../../etc'),
      error: ':14:14: sites\\[1\\]\\.storage: a path without "\\.\\." segments',
    },
    { name: 'a key given twice', text: () => lab.replace('rpo: 5m', 'rpo: 5m\n    rpo: 1m'), error: ':39:5: protections\\[0\\]\\.rpo: duplicate key "rpo"' },
    { name: 'a YAML syntax error', text: () => lab.replace('vms: [acme-db]', 'vms: [acme-db'), error: ':\\d+:\\d+: not valid YAML: .+' },
  ];

  it('answers each with one line naming the file and the place, exit 1, no stack', async () => {
    const files = await Promise.all(
      cases.map(async (c, i) => {
        const file = join(dir, `case-${i}.yaml`);
        await writeFile(file, c.text());
        return file;
      }),
    );
    const started = Date.now();
    const results = await Promise.all(files.map((file) => runVmdr(['config', 'check', file])));
    results.forEach((result, i) => {
      assert.equal(result.stdout, '', cases[i]!.name);
      assertOneLineError(result, new RegExp(`^vmdr: ${escape(files[i]!)}${cases[i]!.error}$`));
    });
    assert.ok(Date.now() - started < 60_000, `${cases.length} checks took ${Date.now() - started} ms`);
  });

  it('says so for a file that is missing', async () => {
    const file = join(dir, 'none.yaml');
    assertOneLineError(await runVmdr(['config', 'check', file]), new RegExp(`^vmdr: ${escape(file)}: no such file$`));
  });

  it('gives the file and the path as JSON with --json', async () => {
    const file = join(dir, 'json.yaml');
    await writeFile(file, lab.replace('rpo: 5m', 'rpo: 0m'));
    const result = await runVmdr(['config', 'check', file, '--json']);
    assert.equal(result.code, 1, result.stderr);
    assert.deepEqual(JSON.parse(result.stderr), {
      error: { code: 'CONFIG_INVALID', message: `${file}:38:10: protections[0].rpo: a duration from 1s to 30d`, file, path: 'protections[0].rpo' },
    });
  });

  it('prints the stack only when asked (--debug)', async () => {
    const file = join(dir, 'debug.yaml');
    await writeFile(file, bomb());
    const result = await runVmdr(['config', 'check', file, '--debug']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^vmdr: .*YAML aliases bring the config past 200000 values\nConfigInvalid: .*\n\s+at /);
  });
});

describe('vmdr on an error that is not one of its own (a bug)', () => {
  // A rejection no command handles, planted in the CLI's process the moment the CLI has installed
  // its handler for them (a timer instead raced the CLI's start on a loaded machine).
  const planted = `const on = process.on.bind(process);
process.on = (event, listener) => {
  on(event, listener);
  if (event === 'unhandledRejection') {
    process.on = on;
    queueMicrotask(() => Promise.reject(new TypeError('planted')));
  }
  return process;
};`;
  const bug = { NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent(planted)}` };

  it('says "internal error" in one line, exit 1, and how to see where', async () => {
    assertOneLineError(await runVmdr(['config', 'check', LAB], bug), /^vmdr: internal error: planted \(a bug in vmdr; --debug shows where\)$/);
  });

  it('prints the stack with --debug', async () => {
    const result = await runVmdr(['config', 'check', LAB, '--debug'], bug);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^vmdr: internal error: planted\nTypeError: planted\n\s+at /);
  });
});
