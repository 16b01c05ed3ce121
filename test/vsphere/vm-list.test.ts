/**
 * `vmdr vm list --host vsphere://…` through the built CLI against the govmomi simulator: the
 * same table and JSON as the libvirt form, the password from the environment or a file (never a
 * flag, never the URI), and a running vmdr whose command line (what `ps` shows) holds no password.
 */
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { assertOneLineError } from '../helpers/assertions.js';
import { runVmdr, spawnVmdr } from '../helpers/lab.js';
import { startVcsim, type Vcsim } from '../helpers/vcsim.js';

describe('vmdr vm list on vSphere (simulator)', function () {
  this.timeout(120_000);
  let vcsim: Vcsim;
  let dir: string;
  before(async () => {
    // The cases without a password in the environment must not find one left there by whoever runs the tests.
    delete process.env.VMDR_VSPHERE_PASSWORD;
    vcsim = await startVcsim();
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-vm-list-'));
  });
  after(async () => {
    await vcsim?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const withPassword = () => ({ VMDR_VSPHERE_PASSWORD: vcsim.password });

  it('lists the datacenter\'s VMs as the libvirt form does, the password from VMDR_VSPHERE_PASSWORD', async () => {
    const table = await runVmdr(['vm', 'list', '--host', vcsim.uri()], withPassword());
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0]!, /^NAME\s+STATE\s+MEMORY\s+VCPUS\s+DISKS\s+NICS$/);
    assert.ok(lines.some((l) => /^DC0_H0_VM0\s+(running|shutoff)\s+\d+ MiB\s+\d+\s/.test(l)), table.stdout);

    const json = await runVmdr(['vm', 'list', '--host', vcsim.uri(), '--json'], withPassword());
    assert.equal(json.code, 0, json.stderr);
    const vms = JSON.parse(json.stdout) as { name: string; id: string; powerState: string; disks: unknown[]; nics: { mac: string }[] }[];
    const names = vms.map((v) => v.name);
    for (const name of ['DC0_H0_VM0', 'DC0_H0_VM1', 'DC0_C0_RP0_VM0', 'DC0_C0_RP0_VM1']) assert.ok(names.includes(name), `${name} in ${names.join(', ')}`);
    const vm = vms.find((v) => v.name === 'DC0_H0_VM0')!;
    assert.match(vm.id, /^[0-9a-f-]{36}$/);
    assert.ok(vm.nics.length >= 1 && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(vm.nics[0]!.mac), JSON.stringify(vm.nics));
  });

  it('reads the password from --password-file (0600), and refuses one others may read', async () => {
    const file = join(dir, 'password');
    await writeFile(file, `${vcsim.password}\n`, { mode: 0o600 });
    const ok = await runVmdr(['vm', 'list', '--host', vcsim.uri(), '--password-file', file, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok((JSON.parse(ok.stdout) as { name: string }[]).some((v) => v.name === 'DC0_H0_VM0'));

    const open = join(dir, 'password-open');
    await writeFile(open, vcsim.password, { mode: 0o644 });
    const refused = await runVmdr(['vm', 'list', '--host', vcsim.uri(), '--password-file', open]);
    assertOneLineError(refused, new RegExp(`^vmdr: vSphere password file ${open.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: has mode 0644: .*chmod 600 .*$`));
    assert.doesNotMatch(refused.stderr, new RegExp(vcsim.password));
  });

  it('refuses a wrong password, a missing one, one in the URI and a --password flag: one line each, no password repeated', async () => {
    const wrong = await runVmdr(['vm', 'list', '--host', vcsim.uri()], { VMDR_VSPHERE_PASSWORD: 'not-the-password' });
    assertOneLineError(wrong, /^vmdr: vSphere 127\.0\.0\.1 refused the login of "vmdr-test": wrong user name or password .*$/);
    assert.doesNotMatch(wrong.stderr, /not-the-password/);

    const missing = await runVmdr(['vm', 'list', '--host', vcsim.uri()]);
    assertOneLineError(missing, /^vmdr: no password for vSphere 127\.0\.0\.1: the environment variable VMDR_VSPHERE_PASSWORD is not set .*$/);

    const inUri = vcsim.uri().replace(`${vcsim.user}@`, `${vcsim.user}:${vcsim.password}@`);
    const uri = await runVmdr(['vm', 'list', '--host', inUri]);
    assertOneLineError(uri, /^vmdr: vSphere URI "vsphere:\/\/vmdr-test:\*\*\*@127\.0\.0\.1:\d+\/DC0\?thumbprint=SHA256:[0-9A-F:]+": it holds a password; passwords never go in URIs.*$/);
    assert.doesNotMatch(uri.stderr, new RegExp(vcsim.password));

    const flag = await runVmdr(['vm', 'list', '--host', vcsim.uri(), '--password', 'x']);
    assert.equal(flag.code, 2, flag.stderr);
    assert.match(flag.stderr, /^vmdr: Unknown argument: password/m);

    const notVsphere = await runVmdr(['vm', 'list', '--host', 'test:///default', '--password-file', '/dev/null']);
    assert.equal(notVsphere.code, 2);
    assert.match(notVsphere.stderr, /^vmdr: --password-file is for vsphere:\/\/ hosts, not test:\/\/\/default/);
  });

  it('shows no password in what `ps` reads of a running vmdr, and keeps its environment from other users', async () => {
    const file = join(dir, 'password-ps');
    await writeFile(file, vcsim.password, { mode: 0o600 });
    for (const how of [{ args: [] as string[], env: withPassword() }, { args: ['--password-file', file], env: {} }]) {
      const run = spawnVmdr(['vm', 'list', '--host', vcsim.uri(), ...how.args], how.env);
      const pid = run.process.pid!;
      const seen: string[] = [];
      let environMode: number | undefined;
      let ended = false;
      void run.done.then(() => (ended = true));
      // What `ps -o args` shows, read again and again for as long as the process lives: it logs in meanwhile.
      while (!ended) {
        const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
        if (cmdline) seen.push(cmdline.split('\0').join(' '));
        environMode ??= await stat(`/proc/${pid}/environ`).then((s) => s.mode & 0o777, () => undefined);
        await delay(5);
      }
      const result = await run.done;
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /DC0_H0_VM0/);
      assert.ok(seen.length > 0, 'the running process was seen');
      assert.ok(seen.some((c) => c.includes('vm list --host vsphere://')), seen[0]);
      for (const c of seen) assert.ok(!c.includes(vcsim.password), `the password in ${c}`);
      assert.equal(environMode, 0o400, 'only its own user may read its environment');
    }
  });
});
