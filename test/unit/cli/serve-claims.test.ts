/**
 * One `vmdr serve` per site of a state file: a second daemon of the same site is refused in one
 * line before it starts anything; daemons of different sites share a state file; a daemon killed
 * with -9 leaves nothing that stops the next one. On libvirt's test driver, the real CLI.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeTestConfig } from '../../helpers/test-config.js';
import { startServe, type ServeProcess } from '../../helpers/vmdr-serve.js';

const exec = promisify(execFile);
const CLI = join(import.meta.dirname, '..', '..', '..', 'dist', 'scripts', 'vmdr.js');

describe('vmdr serve: one daemon per site of a state file', function () {
  this.timeout(60_000);
  let dir: string;
  let config: string;
  let env: Record<string, string>;
  const running: ServeProcess[] = [];
  const serve = async (...args: string[]) => {
    const s = await startServe(config, { args: ['--no-replicate', '--no-receive', ...args], env });
    running.push(s);
    return s;
  };
  const refused = async (...args: string[]) =>
    exec(process.execPath, [CLI, 'serve', '--config', config, '--no-replicate', '--no-receive', ...args], { env: { ...process.env, ...env }, timeout: 20_000 }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );

  before(async () => {
    ({ dir, file: config } = await writeTestConfig('vmdr-claims'));
    env = { VMDR_CONTROL_DIR: join(dir, 'run') };
  });

  after(async () => {
    await Promise.all(running.map((s) => s.stop()));
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a second daemon of the same site in one line, exit 1; another site shares the state file', async () => {
    const first = await serve('--site', 'dr');
    const second = await refused('--site', 'dr');
    assert.equal(second.code, 1);
    assert.equal(second.stderr.trim().split('\n').length, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`^vmdr: another vmdr serve runs site "dr" on state file ${join(dir, 'state.db')}`));
    const all = await refused();
    assert.equal(all.code, 1, 'a daemon of every site overlaps the one of dr');
    await serve('--site', 'src');
    void first;
  });

  it('takes over from a daemon killed with -9', async () => {
    const victim = running.find((s) => s.child.spawnargs.includes('dr'))!;
    await victim.kill();
    running.splice(running.indexOf(victim), 1);
    const next = await serve('--site', 'dr');
    assert.ok(next.events.some((e) => e.event === 'ready'));
  });
});
