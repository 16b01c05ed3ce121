/**
 * The libvirt adapter's error cases on libvirt's test driver (test:///default, in this process):
 * the table in test/helpers/adapter-error-cases.ts, which the lab suite runs on qemu:///system too,
 * and what the CLI says of a libvirtd it cannot reach and of a URI of a transport nobody knows.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAdapter } from '../../hypervisors/index.js';
import { VmdrError, type HypervisorAdapter, type VmSpec } from '../../hypervisors/types.js';
import { describeErrorCases, type ErrorCaseFixture } from '../helpers/adapter-error-cases.js';
import { assertOneLineError } from '../helpers/assertions.js';
import { runVmdr } from '../helpers/lab.js';

describe('libvirt adapter errors on the test driver', () => {
  let adapter: HypervisorAdapter;
  let dir: string;
  let fixture: ErrorCaseFixture;
  const made = new Set<string>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-adapter-errors-'));
    adapter = openAdapter('test:///default');
    await adapter.connect();
    const spec = (overrides: Partial<VmSpec> = {}): VmSpec => {
      const name = `test-errors-${randomBytes(3).toString('hex')}`;
      made.add(name);
      return {
        name,
        memoryMiB: 64,
        vcpus: 1,
        boot: { kind: 'kernel', kernel: '/var/lib/vmdr/lab/vmlinuz', initrd: '/var/lib/vmdr/lab/initrd.img', cmdline: 'console=ttyS0' },
        disks: [{ path: join(dir, 'vda.qcow2'), format: 'qcow2' }],
        nics: [],
        ...overrides,
      };
    };
    const running = spec();
    await adapter.defineVm(running);
    await adapter.start(running.name);
    fixture = {
      adapter,
      running: running.name,
      spec,
      template: async (name, xml) => {
        await writeFile(join(dir, name), xml);
        return join(dir, name);
      },
    };
  });

  after(async () => {
    for (const name of made) {
      await adapter
        .stop(name, { mode: 'force' })
        .then(() => adapter.undefine(name))
        .catch((err: unknown) => {
          if (!(err instanceof VmdrError && err.code === 'VM_NOT_FOUND')) throw err;
        });
    }
    await adapter?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  describeErrorCases('test', () => fixture);

  it('shows libvirt\'s code and domain in the CLI\'s --json error, one line either way (vmdr vm list)', async () => {
    const uri = 'qemu+unix:///system?socket=/nonexistent/libvirt-sock';
    const plain = await runVmdr(['vm', 'list', '--host', uri]);
    assertOneLineError(plain, /^vmdr: cannot reach hypervisor qemu\+unix:\/\/\/system\?socket=\/nonexistent\/libvirt-sock: .*\(is libvirtd running\?/);
    const json = await runVmdr(['vm', 'list', '--host', uri, '--json']);
    assert.equal(json.code, 1, json.stderr);
    assert.equal(json.stderr.trim().split('\n').length, 1, json.stderr);
    const { error } = JSON.parse(json.stderr) as { error: { code: string; host: string; libvirt: unknown } };
    assert.deepEqual([error.code, error.host, error.libvirt], ['HYPERVISOR_UNREACHABLE', uri, { code: 38, domain: 7 }]);
  });

  it('reaches remote hosts the way libvirt does: ssh, tcp and tls URIs to a closed loopback port fail at once, naming the URI', async function () {
    this.timeout(30_000);
    for (const uri of ['qemu+ssh://nobody@127.0.0.1:1/system', 'qemu+tcp://127.0.0.1:1/system', 'qemu+tls://127.0.0.1:1/system']) {
      const remote = openAdapter(uri);
      const started = Date.now();
      try {
        const err = await remote.connect().then(() => assert.fail(`${uri}: connected`), (e: unknown) => e);
        assert.ok(err instanceof VmdrError, String(err));
        assert.equal(err.code, 'HYPERVISOR_UNREACHABLE', `${uri}: ${err.message}`);
        assert.ok(err.message.startsWith(`cannot reach hypervisor ${uri}: `), err.message);
        assert.ok(!err.message.includes('\n'), err.message);
        assert.ok(Date.now() - started < 10_000, `${uri}: ${Date.now() - started} ms`);
      } finally {
        await remote.close();
      }
    }
  });

  it('names a URI of an unknown transport in one line, where the config has it, and its code with --json (vmdr status, vmdr config check)', async () => {
    const uri = 'qemu+bogus:///system';
    const config = join(dir, 'vmdr.yaml');
    // status opens the sites of the protections it reports.
    await writeFile(
      config,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: prod, uri: "${uri}" }
  - { name: dr, uri: "test:///default", storage: ${join(dir, 'replicas')} }
protections:
  - name: web
    source: { site: prod, vm: web }
    target: { site: dr, vm: web-dr, nics: [{ network: default }] }
`,
    );
    // Refused with the config, before anything is opened: `vmdr config check` says it too.
    for (const command of ['status', 'config check']) {
      const plain = await runVmdr([...command.split(' '), '--config', config]);
      assertOneLineError(plain, /^vmdr: .*vmdr\.yaml:4:24: sites\[0\]\.uri: "qemu\+bogus:\/\/\/system" is not a hypervisor URI vmdr knows: expected one of qemu:\/\//);
    }
    const json = await runVmdr(['status', '--config', config, '--json']);
    assert.equal(json.code, 1, json.stderr);
    assert.equal(json.stderr.trim().split('\n').length, 1, json.stderr);
    const { error } = JSON.parse(json.stderr) as { error: { code: string; path: string } };
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.equal(error.path, 'sites[0].uri');
  });
});
