/**
 * Which VM a protection's source is, on libvirt's test driver, against a real receiver (`vmdr
 * serve` over HTTPS on loopback) holding the identity record, as a source host reaches it: the
 * first sync adopts the VM it finds, another VM under the name is refused, the same VM renamed is
 * followed, and replacing the source keeps the old points until they are released (from a host
 * whose state file is not the DR site's, so through the receiver's routes).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter, VmSpec } from '../../hypervisors/types.js';
import { checkSource, renamedWarning, resolveSource } from '../../plugin/protections/source-identity.js';
import { loadIdentity } from '../../plugin/sites/identity.js';
import { asThisSite } from '../../plugin/sites/peer-connect.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { ReceiverClient } from '../../plugin/replication/sender/receiver-client.js';
import { rejectsWith } from '../helpers/assertions.js';
import { runVmdr } from '../helpers/lab.js';
import { KiB, MiB, chunks, encodeStream, receiverConfigYaml, streamBytes, streamHeader } from '../helpers/receiver-lab.js';
import { startServe, type ServeProcess } from '../helpers/vmdr-serve.js';

describe('source identity of a protection (test:///default, a real receiver)', function () {
  this.timeout(60_000);
  let dir: string;
  let adapter: HypervisorAdapter;
  let serve: ServeProcess | undefined;
  let client: ReceiverClient;
  let sourceConfig: string;
  let listen: string;
  const name = `test-id-${randomBytes(3).toString('hex')}`;
  const protection = { name, source: { vm: name } };

  const spec = (vm: string): VmSpec => ({
    name: vm,
    memoryMiB: 64,
    vcpus: 1,
    boot: { kind: 'kernel', kernel: '/var/lib/vmdr/lab/vmlinuz', initrd: '/var/lib/vmdr/lab/initrd.img', cmdline: 'console=ttyS0' },
    disks: [{ path: join(dir, `${vm}.qcow2`), format: 'qcow2' }],
    nics: [{ network: 'default' }],
  });
  const remove = (vm: string) => adapter.undefine(vm).catch(() => undefined);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'test-vmdr-identity-'));
    adapter = openAdapter('test:///default');
    await adapter.connect();
    listen = `127.0.0.1:${await freeLoopbackPort()}`;
    const credentials = join(dir, 'receiver');
    const drConfig = join(dir, 'dr.yaml');
    const protections = [{ name }];
    await writeFile(drConfig, receiverConfigYaml({ statePath: join(dir, 'dr.db'), storage: join(dir, 'replicas'), listen, credentials, protections }));
    sourceConfig = join(dir, 'source.yaml');
    await writeFile(sourceConfig, receiverConfigYaml({ statePath: join(dir, 'source.db'), storage: join(dir, 'not-here'), listen, credentials, protections }));
    serve = await startServe(drConfig);
    client = new ReceiverClient(`https://${listen}`, 'dr', asThisSite(await loadIdentity(credentials)));
  });

  after(async () => {
    client?.close();
    await serve?.stop();
    for (const vm of [name, `${name}-renamed`]) await remove(vm);
    await adapter?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('adopts the VM found when none is recorded, refuses another VM under the name, keeps the old points on replace, releases them', async () => {
    const first = await adapter.defineVm(spec(name));
    const adopted = await checkSource(adapter, protection, client);
    assert.deepEqual(adopted.source, { vm: name, uuid: first.id });
    assert.equal(adopted.notes.length, 1);
    assert.match(adopted.notes[0]!, new RegExp(`recorded the identity of source VM "${name}": UUID ${first.id} \\(none was recorded\\)`));
    assert.deepEqual(await checkSource(adapter, protection, client), { source: { vm: name, uuid: first.id }, notes: [] }, 'said once');
    assert.equal((await client.recordedSource(name))?.uuid, first.id);

    const disks = [{ name: 'vda', sizeBytes: 4 * MiB }];
    const stream = encodeStream(streamHeader({ protection: name, disks, base: null, n: 1 }), [{ kind: 'data', disk: 0, offset: 0, data: Buffer.alloc(64 * KiB, 1) }]);
    await client.sendCycle(name, chunks(streamBytes(stream)));

    // The server is reinstalled: another VM under the same name.
    await adapter.undefine(name);
    const second = await adapter.defineVm(spec(name));
    const refused = await rejectsWith(checkSource(adapter, protection, client), 'SOURCE_IDENTITY_CHANGED');
    assert.equal(refused.message, `protection "${name}": source VM "${name}" is now UUID ${second.id}, not UUID ${first.id} whose recovery points it holds; nothing was synced`);
    assert.match(refused.remedy ?? '', new RegExp(`vmdr protect ${name} --replace-source`));
    assert.deepEqual(
      (await client.recordSource(name, { uuid: second.id, vm: name })).outcome,
      'conflict',
      'without --replace-source the record stays',
    );

    const replaced = await client.recordSource(name, { uuid: second.id, vm: name }, true);
    assert.deepEqual([replaced.outcome, replaced.previous?.uuid, replaced.source.uuid, replaced.kept], ['replaced', first.id, second.id, ['rp-1']]);
    assert.deepEqual((await checkSource(adapter, protection, client)).source.uuid, second.id);
    assert.deepEqual((await client.listPoints(name)).map((p) => [p.id, p.replacedSource]), [['rp-1', first.id]]);

    // From a host that is not the DR host: through the receiver.
    const shown = await runVmdr(['points', name, '--config', sourceConfig]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`rp-1 .* full \\(pinned: replaced VM ${first.id}\\)`));
    const unknown = await runVmdr(['points', name, '--release', 'rp-9', '--config', sourceConfig]);
    assert.equal(unknown.code, 1);
    assert.equal(unknown.stderr, `vmdr: protection "${name}" has no recovery point rp-9 (list its points with \`vmdr points ${name}\`)\n`);
    const released = await runVmdr(['points', name, '--release', 'replaced', '--config', sourceConfig]);
    assert.equal(released.code, 0, released.stderr);
    assert.equal(released.stdout, `${name}: released rp-1: retention may merge them now\n`);
    assert.deepEqual((await client.listPoints(name)).map((p) => [p.id, p.replacedSource]), [['rp-1', null]]);
  });

  it('follows the recorded VM by UUID when its name is gone, and says so; neither there: VM_NOT_FOUND', async () => {
    const vm = await adapter.defineVm(spec(`${name}-renamed`));
    const recorded = { uuid: vm.id, vm: name, recordedAt: new Date().toISOString() };
    const found = await resolveSource(adapter, 'web', `${name}-gone`, recorded);
    assert.deepEqual(found, { vm: `${name}-renamed`, uuid: vm.id, renamed: { from: `${name}-gone`, to: `${name}-renamed` } });
    assert.equal(
      renamedWarning('web', found),
      `source VM "${name}-gone" of protection "web" is gone; the same VM (UUID ${vm.id}) is now named "${name}-renamed" and was synced: update the config`,
    );
    await adapter.undefine(`${name}-renamed`);
    const err = await rejectsWith(resolveSource(adapter, 'web', `${name}-gone`, recorded), 'VM_NOT_FOUND');
    assert.equal(err.subject.vm, `${name}-gone`, 'names the VM the config names');
  });

  it('answers bad requests on its routes with 400/404 and a code, never 500', async () => {
    const ask = async (method: string, path: string, body?: unknown) => {
      const { request } = await import('node:https');
      const { cert, key } = await loadIdentity(join(dir, 'receiver'));
      return new Promise<{ status: number; code: string }>((resolve, reject) => {
        const req = request(`https://${listen}${path}`, { method, ca: cert, cert, key, headers: { 'content-type': 'application/json' } }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve({ status: res.statusCode!, code: (JSON.parse(text) as { error?: { code: string } }).error?.code ?? '' }));
        });
        req.on('error', reject);
        req.end(body === undefined ? undefined : JSON.stringify(body));
      });
    };
    assert.deepEqual(await ask('PUT', `/v1/protections/${name}/source`, { vm: name }), { status: 400, code: 'BAD_REQUEST' });
    assert.deepEqual(await ask('PUT', `/v1/protections/${name}/source`, { uuid: 'x', vm: name, extra: 1 }), { status: 400, code: 'BAD_REQUEST' });
    assert.deepEqual(await ask('GET', '/v1/protections/nobody/source'), { status: 404, code: 'PROTECTION_UNKNOWN' });
    assert.deepEqual(await ask('POST', `/v1/protections/${name}/points/release`, { points: [] }), { status: 400, code: 'BAD_REQUEST' });
    assert.deepEqual(await ask('POST', `/v1/protections/${name}/points/release`, { points: ['rp-77'] }), { status: 404, code: 'RECOVERY_POINT_NOT_FOUND' });
  });
});
