/**
 * vmdr as a service: the `vmdr` command on PATH that set-up installs, and the systemd unit in
 * templates/ that runs it, as systemd itself reads the unit.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const UNIT = join(import.meta.dirname, '..', '..', '..', 'templates', 'systemd', 'vmdr.service');

describe('vmdr as a service', () => {
  it('is on PATH after set-up, and runs as itself (no npx between it and its signals)', async () => {
    const { stdout } = await exec('vmdr', ['--help']);
    assert.match(stdout, /vmdr serve/);
    const { stdout: resolved } = await exec('readlink', ['-f', '/usr/local/bin/vmdr']);
    assert.match(resolved.trim(), /\/dist\/scripts\/vmdr\.js$/);
  });

  it('has a systemd unit that systemd accepts, running `vmdr serve` with the config under /etc/vmdr', async () => {
    // verify exits non-zero on a unit it cannot use (a missing ExecStart binary, an unknown key).
    const { stderr } = await exec('systemd-analyze', ['verify', UNIT]).catch((err: { stderr: string }) => {
      throw new Error(`systemd-analyze verify: ${err.stderr}`);
    });
    assert.doesNotMatch(stderr, /vmdr\.service/, stderr);
  });
});
