import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setRole } from '../../plugin/state/roles.js';
import { StateStore } from '../../plugin/state/store.js';
import { assertOneLineError } from '../helpers/assertions.js';
import { runVmdr } from '../helpers/lab.js';

describe('the vmdr CLI', function () {
  this.timeout(60_000);
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'test-vmdr-cli-'))));
  after(() => rm(dir, { recursive: true, force: true }));

  it('lists its commands in --help', async () => {
    const r = await runVmdr(['--help']);
    assert.equal(r.code, 0);
    for (const c of ['vm', 'config', 'status', 'target']) assert.match(r.stdout, new RegExp(`vmdr ${c}`));
  });

  it('lists VMs as JSON', async () => {
    const r = await runVmdr(['vm', 'list', '--host', 'test:///default', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const vms = JSON.parse(r.stdout) as { name: string; powerState: string }[];
    assert.deepEqual(vms.map((v) => [v.name, v.powerState]), [['test', 'running']]);
  });

  it('lists the VMs of the real libvirtd', async () => {
    const r = await runVmdr(['vm', 'list', '--host', 'qemu:///system']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+STATE/);
  });

  it('names an unknown host URI and the ones it knows', async () => {
    assertOneLineError(await runVmdr(['vm', 'list', '--host', 'foo://x']), /^vmdr: unknown hypervisor URI "foo:\/\/x": expected one of /);
  });

  it('says when libvirtd cannot be reached', async () => {
    const r = await runVmdr(['vm', 'list', '--host', 'qemu+unix:///system?socket=/nonexistent/libvirt-sock']);
    assertOneLineError(r, /^vmdr: cannot reach hypervisor qemu\+unix:\/\/\/system\?socket=\/nonexistent\/libvirt-sock: /);
  });

  it('points at the line of an invalid config file', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'version: 1\nsites:\n  - name: prod\n    uri: 7\n');
    assertOneLineError(await runVmdr(['config', 'check', file]), new RegExp(`^vmdr: ${file}:4:10: sites\\[0\\]\\.uri: expected string$`));
    assertOneLineError(await runVmdr(['status', '--config', join(dir, 'none.yaml')]), /none\.yaml: no such file$/);
  });

  it('reports a protected VM that does not exist', async () => {
    const file = join(dir, 'missing.yaml');
    await writeFile(
      file,
      `version: 1
sites:
  - { name: prod, uri: "qemu:///system" }
  - { name: dr, uri: "qemu:///system", storage: ${dir} }
protections:
  - name: ghost
    source: { site: prod, vm: test-no-such-vm }
    target: { site: dr, vm: test-no-such-vm-dr, nics: [{ network: test-none }] }
`,
    );
    const status = await runVmdr(['status', '--config', file, '--json']);
    assert.equal(status.code, 0, status.stderr);
    const [row] = JSON.parse(status.stdout) as { source: { state: string }; target: { state: string } }[];
    assert.equal(row!.source.state, 'missing');
    assert.equal(row!.target.state, 'missing');
    assertOneLineError(await runVmdr(['target', 'provision', '--config', file]), /^vmdr: VM "test-no-such-vm" does not exist on qemu:\/\/\/system$/);
  });

  it("shows each protection's role; a failed-over one's lag is no RPO breach", async () => {
    const file = join(dir, 'roles.yaml');
    const stateFile = join(dir, 'roles-state.db');
    await writeFile(
      file,
      `version: 1
state: { path: ${stateFile} }
sites:
  - { name: prod, uri: "qemu:///system" }
  - { name: dr, uri: "qemu:///system", storage: ${dir} }
protections:
  - name: test-role
    source: { site: prod, vm: test-no-such-vm }
    target: { site: dr, vm: test-no-such-vm-dr, nics: [{ network: test-none }] }
`,
    );
    type Row = { role: string | null; failover: { id: string | null; point: string | null } | null; rpoBreached: boolean };
    const status = async () => {
      const r = await runVmdr(['status', '--config', file, '--json']);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as Row[])[0]!;
    };
    const before = await status();
    assert.deepEqual([before.role, before.failover, before.rpoBreached], ['replicating', null, true], 'no point yet: breached');
    const state = StateStore.open(stateFile);
    try {
      setRole(state.db, 'test-role', 'failed-over', { failover: 'fo-20261125T120000-abcd', point: 'rp-3' });
    } finally {
      state.close();
    }
    const after = await status();
    assert.deepEqual([after.role, after.failover, after.rpoBreached], ['failed-over', { id: 'fo-20261125T120000-abcd', point: 'rp-3' }, false]);
    const text = await runVmdr(['status', '--config', file]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^PROTECTION\s.*\sROLE\s/);
    assert.match(text.stdout, /\sfailed over \(fo-20261125T120000-abcd, rp-3\)\s/);
  });

  it('answers a missing command with usage and exit 2', async () => {
    const r = await runVmdr([]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /name a command/);
  });

  it('says what a --shutdown-timeout may be, in one line with exit 2, for failover and failback alike', async () => {
    for (const command of ['failover', 'failback']) {
      for (const [value, expected] of [['30d', 'a duration from 1s to 24d'], ['soon', 'a duration such as 30s, 15m, 4h or 7d']] as const) {
        const r = await runVmdr([command, 'web', '--shutdown-timeout', value]);
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stderr, `vmdr: --shutdown-timeout "${value}" is not ${expected} (see vmdr ${command} --help)\n`);
      }
    }
  });
});
