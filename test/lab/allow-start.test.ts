/**
 * `vmdr allow-start P` on a source host (qemu:///system, this host's hook): a start lease for the
 * protection's source VM without its DR site's answer, audited; refused for a fenced source, where
 * this host has no start guard for the source's site (libvirt's test driver), and for a duration
 * out of range.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import { START_LEASE_DIR } from '../../hypervisors/libvirt/start-lease.js';
import { listAudit } from '../../plugin/state/audit.js';
import { StateStore } from '../../plugin/state/store.js';
import { runVmdr } from '../helpers/lab.js';

const exec = promisify(execFile);

describe('vmdr allow-start (qemu:///system)', () => {
  const vm = `test-alst-${process.pid.toString(36)}`;
  let dir: string;
  let config: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-allow-start-'));
    config = join(dir, 'vmdr.yaml');
    await writeFile(
      config,
      `version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: prod, uri: "qemu:///system" }
  - { name: lab, uri: "test:///default" }
  - { name: dr, uri: "qemu+unix:///system?socket=/nonexistent/libvirt-sock", storage: ${join(dir, 'replicas')} }
protections:
  - name: ${vm}
    source: { site: prod, vm: ${vm} }
    target: { site: dr, vm: ${vm}-dr, nics: [{ network: test-net }] }
  - name: ${vm}-f
    source: { site: prod, vm: ${vm}-f }
    target: { site: dr, vm: ${vm}-f-dr, nics: [{ network: test-net }] }
  - name: ${vm}-t
    source: { site: lab, vm: ${vm}-t }
    target: { site: dr, vm: ${vm}-t-dr, nics: [{ network: test-net }] }
`,
    );
  });
  after(async () => {
    await rm(join(START_LEASE_DIR, vm), { force: true });
    await rm(dir, { recursive: true, force: true });
  });

  it('grants a lease for the time asked, says until when, and audits who', async () => {
    const before = Date.now();
    const r = await runVmdr(['allow-start', vm, '--for', '5m', '--json', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    const answer = JSON.parse(r.stdout) as { protection: string; vm: string; until: string };
    assert.equal(answer.vm, vm);
    const until = Date.parse(answer.until);
    assert.ok(until >= before + 300_000 && until <= Date.now() + 300_000, answer.until);
    assert.equal(Number((await readFile(join(START_LEASE_DIR, vm), 'utf8')).trim()), Math.floor(until / 1000));
    const state = StateStore.open(join(dir, 'state.db'));
    try {
      const [record] = listAudit(state, { limit: 10 });
      assert.deepEqual({ action: record?.action, object: record?.object, result: record?.result, actor: record?.actor }, { action: 'source.allow-start', object: vm, result: 'ok', actor: 'cli' });
    } finally {
      state.close();
    }
  });

  it('refuses a fenced source: a lease does not lift a fence', async () => {
    const fenced = `${vm}-f`;
    const adapter = openAdapter('qemu:///system');
    await adapter.connect();
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'disk.qcow2'), '16M']);
    try {
      await adapter.defineVm({
        name: fenced,
        memoryMiB: 64,
        vcpus: 1,
        boot: { kind: 'disk' },
        disks: [{ path: join(dir, 'disk.qcow2'), format: 'qcow2' }],
        nics: [],
        labels: { role: 'fenced', protection: `${vm}-f`, failover: 'fo-test', 'fenced-at': new Date().toISOString(), autostart: 'off' },
      });
      const r = await runVmdr(['allow-start', fenced, '--config', config]);
      assert.notEqual(r.code, 0);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`source VM ${fenced} of protection ${fenced} is fenced: the protection was failed over \\(fo-test\\).*vmdr failback ${fenced}`));
      assert.equal(await readFile(join(START_LEASE_DIR, fenced), 'utf8').catch(() => 'none'), 'none');
    } finally {
      await adapter.undefine(fenced).catch(() => undefined);
      await adapter.close();
    }
  });

  it('refuses where this host has no start guard for the source, and a duration out of range, in one line', async () => {
    const none = await runVmdr(['allow-start', `${vm}-t`, '--config', config]);
    assert.notEqual(none.code, 0);
    assert.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
    assert.match(none.stderr, /START_GUARD_ABSENT|has no start guard on this host/);
    const long = await runVmdr(['allow-start', vm, '--for', '3d', '--config', config]);
    assert.notEqual(long.code, 0);
    assert.match(long.stderr, /--for "3d" is not a duration from 1m to 24h/);
  });
});
