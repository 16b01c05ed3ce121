import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter, Progress } from '../../hypervisors/types.js';
import { parseConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { provisionTargets } from '../../plugin/targets/provision.js';
import { giveIdentity } from '../../plugin/targets/identity.js';
import { baseImage, serialLog } from '../../plugin/replication/layout.js';
import { copyImage, imageInfo } from '../../plugin/replication/qemu-img.js';
import { ensureProductionVm, LAB_CMDLINE, LAB_DIR } from '../../scripts/lab/production.js';
import { ensureLabGuest, fileSize, GUEST_READY, labScratchDir, parseGuestFields, waitForSerialLine } from '../helpers/lab.js';
import { assertProgress } from '../helpers/assertions.js';

describe('pre-staged target on the real lab (qemu:///system)', function () {
  this.timeout(180_000);
  const id = randomBytes(3).toString('hex');
  const source = `test-src-${id}`;
  const target = `test-dr-${id}`;
  const drNetwork = `test-drnet-${id}`;
  let storage: string;
  let adapter: HypervisorAdapter;
  let sites: SiteConnections;
  const config = () =>
    parseConfig(
      `version: 1
sites:
  - { name: prod, uri: "qemu:///system" }
  - { name: dr, uri: "qemu:///system", storage: ${storage} }
protections:
  - name: web
    source: { site: prod, vm: ${source} }
    target:
      site: dr
      vm: ${target}
      boot: { kind: kernel, kernel: ${LAB_DIR}/vmlinuz, initrd: ${LAB_DIR}/initrd.img, cmdline: ${LAB_CMDLINE} }
      hostname: web-dr-${id}
      nics:
        - { mac: "52:54:00:7e:${id.slice(0, 2)}:${id.slice(2, 4)}", network: ${drNetwork}, addresses: [192.0.2.77/24], gateway: 192.0.2.1, dns: [192.0.2.53] }
`,
      'test.yaml',
    );

  before(async () => {
    await ensureLabGuest();
    storage = await labScratchDir('provision');
    adapter = openAdapter('qemu:///system');
    await adapter.connect();
    await adapter.ensureIsolatedNetwork({ name: drNetwork });
  });

  after(async () => {
    await sites?.close();
    for (const vm of [target, source]) {
      await adapter.stop(vm, { mode: 'force' }).catch(() => undefined);
      await adapter.undefine(vm).catch(() => undefined);
    }
    await adapter.removeNetwork(drNetwork).catch(() => undefined);
    await adapter.close();
    await rm(storage, { recursive: true, force: true });
    await rm(join(LAB_DIR, 'production', source), { recursive: true, force: true });
  });

  it('defines the target powered off on the DR network, with a replica disk the size of the source disk', async () => {
    const production = await ensureProductionVm(adapter, source);
    assert.equal(production.ready.marker, source);
    sites = new SiteConnections(config(), 'test.yaml');
    const progress: Progress[] = [];
    const [result] = await provisionTargets(config(), 'test.yaml', sites, [], undefined, { onProgress: (p) => progress.push(p) });
    assert.equal(result!.action, 'defined');
    assert.equal(result!.identity, 'written');
    // Per target, in steps: its one disk's base image, the VM defined, its identity given.
    assertProgress(progress, ['define']);
    assert.deepEqual(progress.map((p) => [p.done, p.total, p.subject?.protection, p.subject?.vm]), [[0, 3, 'web', target], [1, 3, 'web', target], [2, 3, 'web', target], [3, 3, 'web', target]]);
    const vm = await adapter.getVm(target);
    assert.equal(vm.powerState, 'shutoff');
    assert.equal(vm.nics[0]!.network, drNetwork);
    assert.equal(vm.nics[0]!.mac, `52:54:00:7e:${id.slice(0, 2)}:${id.slice(2, 4)}`);
    assert.equal(vm.labels.protection, 'web');
    const replica = await imageInfo(baseImage(storage, { name: 'web' }, 'vda'));
    const sourceDisk = await imageInfo(production.vm.disks[0]!.path!);
    assert.equal(replica.virtualSize, sourceDisk.virtualSize);

    progress.length = 0;
    const [again] = await provisionTargets(config(), 'test.yaml', sites, [], undefined, { onProgress: (p) => progress.push(p) });
    assert.equal(again!.action, 'unchanged');
    assert.equal(again!.identity, 'in-place');
    assert.deepEqual(progress.map((p) => `${p.phase} ${p.done}/${p.total} ${p.detail}`), ['update 0/0 up to date']);
  });

  it('boots the target from the replica with the DR hostname, MAC and address it was given', async () => {
    const src = await adapter.getVm(source);
    await adapter.stop(source, { mode: 'force' });
    await copyImage(src.disks[0]!.path!, baseImage(storage, { name: 'web' }, 'vda'));
    const protection = config().protections[0]!;
    // Given at provisioning: the failover's identity step finds it in place and changes nothing.
    const applied = await giveIdentity(adapter, protection);
    assert.equal(applied.action, 'in-place');
    assert.deepEqual((await adapter.getVm(target)).disks.filter((d) => d.identitySeed).map((d) => d.path), [applied.seed]);
    const log = serialLog(storage, { name: 'web' });
    const from = await fileSize(log);
    await adapter.start(target);
    const line = await waitForSerialLine({ vm: target, file: log, pattern: GUEST_READY, timeoutMs: 60_000, fromOffset: from });
    const guest = parseGuestFields(line[1]!);
    assert.equal(guest.marker, source, 'the target must boot the source disk content');
    assert.equal(guest.hostname, `web-dr-${id}`);
    assert.equal(guest.mac, protection.target.nics[0]!.mac);
    assert.equal(guest['mac-match'], 'yes');
    assert.equal(guest.ip, '192.0.2.77/24');
    assert.equal(guest.gw, '192.0.2.1');
    assert.equal(guest.dns, '192.0.2.53');
    assert.equal(guest.instance, applied.instanceId);
  });
});
