/**
 * `vmdr tenant` on the real libvirtd (qemu:///system), through the built CLI: each tenant gets
 * its own isolated network even where `<tenant>-<network>` would collide; show says what the DR
 * site has; remove is refused (exit 1, one line) while the tenant owns a protection or a running
 * VM uses its network, and then leaves no network behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { appendItem, editConfig, removeNamedItems } from '../../plugin/config/edit.js';
import { assertOneLineError } from '../helpers/assertions.js';
import { ensureLabGuest, labBoot, labScratchDir, runVmdr } from '../helpers/lab.js';

const exec = promisify(execFile);
const URI = 'qemu:///system';
const virsh = async (...args: string[]) => (await exec('virsh', ['-c', URI, ...args])).stdout;

describe('vmdr tenant on the real libvirtd', function () {
  this.timeout(120_000);
  let dir: string;
  let file: string;
  let adapter: HypervisorAdapter;
  const vmdr = (...args: string[]) => runVmdr(['tenant', ...args, '--config', file]);
  const tenantNetworks = async () => (await virsh('net-list', '--all', '--name')).split('\n').map((l) => l.trim()).filter((n) => /^vmdr-t\d+-test-/.test(n)).sort();

  const cleanUp = async () => {
    for (const n of await adapter.listNetworks()) {
      if (n.labels?.role === 'tenant-network' && n.labels.tenant?.startsWith('test-')) await adapter.removeNetwork(n.name);
    }
  };

  before(async () => {
    dir = await labScratchDir('tenants');
    file = join(dir, 'vmdr.yaml');
    await writeFile(
      file,
      `# the lab's tenants
version: 1
state: { path: ${join(dir, 'state.db')} }
sites:
  - { name: prod, uri: "${URI}" }
  - { name: dr, uri: "${URI}", storage: ${join(dir, 'replicas')} }
`,
    );
    adapter = openAdapter(URI);
    await adapter.connect();
    await cleanUp();
  });
  after(async () => {
    await cleanUp();
    await adapter.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates tenants "test-a-b" + "c" and "test-a" + "b-c" with two different isolated networks', async () => {
    const one = await vmdr('create', 'test-a-b', '--network', 'c');
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, `tenant test-a-b added to ${file}\nnetwork c: vmdr-t8-test-a-b-c, made on site dr\n`);
    const two = await vmdr('create', 'test-a', '--network', 'b-c', '--vm-quota', '2', '--storage-quota', '10', '--description', 'second customer');
    assert.equal(two.code, 0, two.stderr);
    assert.deepEqual(await tenantNetworks(), ['vmdr-t6-test-a-b-c', 'vmdr-t8-test-a-b-c']);
    for (const [name, tenant] of [['vmdr-t8-test-a-b-c', 'test-a-b'], ['vmdr-t6-test-a-b-c', 'test-a']]) {
      const xml = await virsh('net-dumpxml', name!);
      assert.doesNotMatch(xml, /<forward|<ip/, `${name} is isolated`);
      assert.match(xml, new RegExp(`<vmdr:label key="tenant">${tenant}</vmdr:label>`));
      assert.match(await virsh('net-info', name!), /Active:\s+yes/);
    }
    const bridges = await Promise.all(['vmdr-t8-test-a-b-c', 'vmdr-t6-test-a-b-c'].map(async (n) => /<bridge name='([^']+)'/.exec(await virsh('net-dumpxml', n))![1]));
    assert.notEqual(bridges[0], bridges[1]);

    const list = await vmdr('list', '--json');
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(
      (JSON.parse(list.stdout) as { name: string; networks: string[]; quota?: object }[]).map((t) => [t.name, t.networks, t.quota]),
      [
        ['test-a-b', ['vmdr-t8-test-a-b-c'], undefined],
        ['test-a', ['vmdr-t6-test-a-b-c'], { storageGiB: 10, vms: 2 }],
      ],
    );
    assert.match(await readFile(file, 'utf8'), /^# the lab's tenants\n/);
  });

  it('refuses bad names and a second create of a tenant in one line, exit 1, changing nothing', async () => {
    const before = await readFile(file);
    assertOneLineError(await vmdr('create', '../x'), /^vmdr: tenant name "\.\.\/x" is not a name of letters, digits, "\.", "-" or "_" starting with a letter or digit \(at most 63\)$/);
    assertOneLineError(await vmdr('create', 'a\u0007b'), /^vmdr: tenant name "a\\u0007b" is not a name of letters/);
    assertOneLineError(await vmdr('create', 'ok', '--network', 'a/b'), /^vmdr: network name "a\/b" is not a name of letters/);
    assertOneLineError(await vmdr('create', 'ok', '--vm-quota', 'many'), /^vmdr: VM quota "many" is not a whole number above 0$/);
    assertOneLineError(await vmdr('show', 'x/..'), /^vmdr: tenant name "x\/\.\." is not a name of letters/);
    assertOneLineError(await vmdr('create', 'test-a'), new RegExp(`^vmdr: ${file}: tenant "test-a" already exists \\(vmdr tenant show test-a lists its networks`));
    assert.deepEqual(await readFile(file), before);
  });

  it('shows the tenant, its quotas, its networks on the DR site and what it owns', async () => {
    await editConfig(file, (doc) =>
      appendItem(doc, 'protections', { name: 'test-web', tenant: 'test-a', source: { site: 'prod', vm: 'test-web' }, target: { site: 'dr', vm: 'test-web-dr', nics: [{ network: 'vmdr-t6-test-a-b-c' }] } }),
    );
    const shown = await vmdr('show', 'test-a');
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(
      shown.stdout,
      [
        'tenant:        test-a',
        'description:   second customer',
        'storage quota: 10 GiB',
        'VM quota:      2',
        'networks:      ',
        '  vmdr-t6-test-a-b-c: site dr: active, isolated',
        'protections:   ',
        '  test-web: test-web on prod -> test-web-dr on dr',
        'plans:         none',
        'drills:        none',
        '',
      ].join('\n'),
    );
    const json = JSON.parse((await vmdr('show', 'test-a', '--json')).stdout) as { networkStates: { exists: boolean; isolated: boolean }[] };
    assert.deepEqual(json.networkStates.map((s) => [s.exists, s.isolated]), [[true, true]]);
    assertOneLineError(await vmdr('show', 'test-nobody'), new RegExp(`^vmdr: ${file}: no tenant "test-nobody" \\(\`vmdr tenant list\` shows the tenants\\)$`));
  });

  it('refuses removal while a protection exists, even with --force; removes it once gone, networks too', async () => {
    const refused = await vmdr('remove', 'test-a');
    assertOneLineError(refused, /^vmdr: tenant "test-a" still owns 1 protection \("test-web"\) \(remove its protections from the config first/);
    assertOneLineError(await vmdr('remove', 'test-a', '--force'), /^vmdr: tenant "test-a" still owns 1 protection \("test-web"\)/);
    assert.deepEqual(await tenantNetworks(), ['vmdr-t6-test-a-b-c', 'vmdr-t8-test-a-b-c']);

    await editConfig(file, (doc, c) => removeNamedItems(doc, 'protections', c.protections, new Set(['test-web'])));
    const removed = await vmdr('remove', 'test-a');
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(removed.stdout, `tenant test-a removed from ${file}\nnetwork vmdr-t6-test-a-b-c removed from site dr\n`);
    assert.deepEqual(await tenantNetworks(), ['vmdr-t8-test-a-b-c']);
    assertOneLineError(await vmdr('remove', 'test-a'), new RegExp(`^vmdr: ${file}: no tenant "test-a" \\(`));
  });

  it('refuses to remove a network a running guest uses, then removes it once the guest is off', async () => {
    await ensureLabGuest();
    const vm = 'test-tenant-guest';
    await adapter.defineVm({ name: vm, memoryMiB: 128, vcpus: 1, boot: labBoot(), disks: [], nics: [{ network: 'vmdr-t8-test-a-b-c' }] });
    try {
      await adapter.start(vm);
      assertOneLineError(
        await vmdr('remove', 'test-a-b'),
        new RegExp(`^vmdr: network "vmdr-t8-test-a-b-c" of tenant "test-a-b" on ${URI} is in use by running VM "${vm}" \\(stop or move those VMs first; nothing was removed\\)$`),
      );
      assert.deepEqual(await tenantNetworks(), ['vmdr-t8-test-a-b-c']);
      assert.match(await readFile(file, 'utf8'), /name: test-a-b/);
      await adapter.stop(vm, { mode: 'force' });
      const removed = await vmdr('remove', 'test-a-b');
      assert.equal(removed.code, 0, removed.stderr);
      assert.deepEqual(await tenantNetworks(), []);
    } finally {
      await adapter.stop(vm, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(vm).catch(() => undefined);
    }
  });
});
