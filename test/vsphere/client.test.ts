/**
 * The vSphere client core against govmomi's simulator (a real SOAP server over TLS on loopback,
 * test/helpers/vcsim.ts), and against small HTTPS servers of the test's own where the point is a
 * hostile or dead endpoint. No HTTP is mocked.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import type { Progress } from '../../hypervisors/types.js';
import { parseVsphereUri, type VsphereEndpoint } from '../../hypervisors/vsphere/endpoint.js';
import { datacenter, findVm, resolvePath, type Datacenter } from '../../hypervisors/vsphere/find.js';
import { retrieve } from '../../hypervisors/vsphere/property-collector.js';
import { VsphereSession } from '../../hypervisors/vsphere/session.js';
import { moRef, type MoRef } from '../../hypervisors/vsphere/soap.js';
import { waitForTask } from '../../hypervisors/vsphere/task.js';
import { ensureIdentity } from '../../plugin/sites/identity.js';
import { assertProgress, rejectsWith } from '../helpers/assertions.js';
import { startVcsim, type Vcsim } from '../helpers/vcsim.js';

const PASSWORD_ENV = 'VMDR_TEST_VSPHERE_PASSWORD';

describe('vSphere client core (govmomi simulator)', function () {
  this.timeout(60_000);
  let vcsim: Vcsim;
  let dir: string;
  const sessions: VsphereSession[] = [];

  before(async () => {
    vcsim = await startVcsim();
    dir = await mkdtemp(join(tmpdir(), 'vmdr-vsphere-client-'));
    process.env[PASSWORD_ENV] = vcsim.password;
  });
  after(async () => {
    for (const session of sessions) await session.logout().catch(() => undefined);
    delete process.env[PASSWORD_ENV];
    await vcsim?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const endpointOf = (uri = vcsim.uri(), options: Parameters<typeof parseVsphereUri>[1] = {}): VsphereEndpoint =>
    parseVsphereUri(uri, { passwordEnv: PASSWORD_ENV, ...options });
  const open = async (endpoint = endpointOf()) => {
    const session = await VsphereSession.open(endpoint);
    sessions.push(session);
    return session;
  };
  /** The keys of the sessions the simulator holds, as another logged-in session reads them. */
  const sessionKeys = async (session: VsphereSession): Promise<string[]> => {
    const [manager] = await retrieve(session, { type: 'SessionManager', paths: ['sessionList'], objects: [session.content.sessionManager] });
    return ([manager?.props.sessionList ?? []].flat() as { key: string }[]).map((s) => s.key).sort();
  };
  const vmProps = async (session: VsphereSession, vm: MoRef, paths: string[]) =>
    (await retrieve(session, { type: 'VirtualMachine', paths, objects: [vm] }))[0]!.props;

  it('logs in, lists the VMs of DC0 with their power state, finds one by inventory path, and logs out', async () => {
    const session = await open();
    assert.match(session.sessionKey ?? '', /\S/);
    assert.match(session.content.about.apiVersion, /^\d+\.\d+/);
    const dc = await datacenter(session, 'DC0');
    assert.equal(dc.vmFolder.type, 'Folder');
    const vms = await retrieve(session, { type: 'VirtualMachine', paths: ['name', 'runtime.powerState'], container: dc.vmFolder });
    const names = vms.map((vm) => vm.props.name).sort();
    assert.ok(names.includes('DC0_H0_VM0') && names.includes('DC0_C0_RP0_VM0'), names.join(', '));
    for (const vm of vms) {
      assert.equal(vm.ref.type, 'VirtualMachine');
      assert.deepEqual(Object.keys(vm.props).sort(), ['name', 'runtime.powerState'], 'only the paths asked for');
      assert.equal(vm.props['runtime.powerState'], 'poweredOn');
    }

    const byPath = await resolvePath(session, '/DC0/vm/DC0_H0_VM0');
    const byName = vms.find((vm) => vm.props.name === 'DC0_H0_VM0')!.ref;
    assert.equal(byPath.value, byName.value);
    const uuids = await vmProps(session, byPath, ['config.uuid', 'config.instanceUuid']);
    for (const ref of ['/DC0/vm/DC0_H0_VM0', 'DC0_H0_VM0', String(uuids['config.uuid']), String(uuids['config.instanceUuid'])]) {
      assert.equal((await findVm(session, dc, ref)).value, byPath.value, ref);
    }
    await rejectsWith(findVm(session, dc, 'no-such-vm'), 'VM_NOT_FOUND');
    await rejectsWith(resolvePath(session, '/DC0/vm/no-such-vm'), 'VSPHERE_OBJECT_NOT_FOUND');
    await rejectsWith(datacenter(session, 'DC9'), 'VSPHERE_OBJECT_NOT_FOUND');

    const other = await open();
    assert.ok((await sessionKeys(other)).includes(session.sessionKey!));
    const key = session.sessionKey!;
    await session.logout();
    assert.ok(!(await sessionKeys(other)).includes(key), 'the simulator forgot the session that logged out');
    await rejectsWith(datacenter(session, 'DC0'), 'VSPHERE_NOT_AUTHENTICATED');
  });

  describe('tasks and faults', () => {
    let session: VsphereSession;
    let dc: Datacenter;
    let vm: MoRef;
    before(async () => {
      session = await open();
      dc = await datacenter(session, 'DC0');
      vm = await resolvePath(session, '/DC0/vm/DC0_H0_VM1');
    });

    it('waits for a power task with progress (its last event complete), and Tools come and go with the power', async () => {
      const off = await session.call<MoRef>('PowerOffVM_Task', vm);
      await waitForTask(session, off, { phase: 'power off' });
      assert.equal((await vmProps(session, vm, ['runtime.powerState']))['runtime.powerState'], 'poweredOff');
      assert.equal((await vmProps(session, vm, ['guest.toolsRunningStatus']))['guest.toolsRunningStatus'], 'guestToolsNotRunning');

      const events: Progress[] = [];
      const task = await session.call<MoRef>('PowerOnVM_Task', vm);
      assert.equal(task.type, 'Task');
      await waitForTask(session, task, { phase: 'power on', subject: { vm: 'DC0_H0_VM1' }, onProgress: (p) => events.push(p) });
      assertProgress(events, ['power on']);
      assert.deepEqual(events.at(-1), { phase: 'power on', unit: 'steps', done: 100, total: 100, subject: { vm: 'DC0_H0_VM1' } });
      assert.equal((await vmProps(session, vm, ['runtime.powerState']))['runtime.powerState'], 'poweredOn');

      // The simulator's stand-in for VMware Tools: running a moment after power on, as a guest's would be.
      const deadline = Date.now() + 10_000;
      let tools: unknown;
      while ((tools = (await vmProps(session, vm, ['guest.toolsRunningStatus']))['guest.toolsRunningStatus']) !== 'guestToolsRunning' && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(tools, 'guestToolsRunning');
      assert.equal((await vmProps(session, vm, ['guest.toolsStatus']))['guest.toolsStatus'], 'toolsOk');
    });

    it('a wait whose signal aborts ends with the abort reason', async () => {
      const controller = new AbortController();
      const reason = new Error('operator cancelled');
      controller.abort(reason);
      // (A power on of a VM that is on: it fails there, and leaves the VM as it was.)
      const task = await session.call<MoRef>('PowerOnVM_Task', vm);
      await assert.rejects(waitForTask(session, task, { phase: 'power on', signal: controller.signal }), (e) => e === reason);
      await assert.rejects(session.call('PowerOnVM_Task', vm, {}, { signal: controller.signal }), (e) => e === reason);
    });

    it('powering on a VM that is on fails with INVALID_POWER_STATE naming the VM, the fault kept as cause', async () => {
      const task = await session.call<MoRef>('PowerOnVM_Task', vm);
      const err = await rejectsWith(waitForTask(session, task, { phase: 'power on', subject: { vm: 'DC0_H0_VM1' } }), 'INVALID_POWER_STATE');
      assert.match(err.message, /^VM "DC0_H0_VM1" on 127\.0\.0\.1 is poweredOn/);
      assert.equal(err.subject.vm, 'DC0_H0_VM1');
      assert.equal((err.cause as { faultType?: string }).faultType, 'InvalidPowerState');
      // A fault of the call itself (not of its task) maps the same way: ShutdownGuest of a VM that is off.
      const off = await resolvePath(session, '/DC0/vm/DC0_H0_VM0');
      await waitForTask(session, await session.call<MoRef>('PowerOffVM_Task', off), { phase: 'power off' });
      await rejectsWith(session.call('ShutdownGuest', off, {}, { vm: 'DC0_H0_VM0' }), 'INVALID_POWER_STATE');
      // A VM that is gone, by its MoRef.
      await rejectsWith(session.call('PowerOnVM_Task', moRef('VirtualMachine', 'vm-99999'), {}, { vm: 'ghost' }), 'VM_NOT_FOUND');
    });

    it('a customization (nested xsi:types) is applied at the next power on: host name and IP show in guest', async () => {
      const target = await resolvePath(session, '/DC0/vm/DC0_C0_RP0_VM0');
      await waitForTask(session, await session.call<MoRef>('PowerOffVM_Task', target), { phase: 'power off' });
      const spec = {
        identity: { _type: 'CustomizationLinuxPrep', hostName: { _type: 'CustomizationFixedName', name: 'test-web1' }, domain: 'dr.example' },
        globalIPSettings: { dnsServerList: ['192.0.2.53'] },
        nicSettingMap: [
          { adapter: { ip: { _type: 'CustomizationFixedIp', ipAddress: '192.0.2.10' }, subnetMask: '255.255.255.0', gateway: ['192.0.2.1'], dnsServerList: ['192.0.2.53'] } },
        ],
      };
      await waitForTask(session, await session.call<MoRef>('CustomizeVM_Task', target, { spec }), { phase: 'customize' });
      await waitForTask(session, await session.call<MoRef>('PowerOnVM_Task', target), { phase: 'power on' });
      const guest = await vmProps(session, target, ['guest.hostName', 'guest.ipAddress', 'guest.net']);
      assert.equal(guest['guest.hostName'], 'test-web1');
      assert.equal(guest['guest.ipAddress'], '192.0.2.10');
      const [nic] = [guest['guest.net']].flat() as { ipAddress?: string | string[] }[];
      assert.deepEqual([nic?.ipAddress].flat(), ['192.0.2.10']);
    });

    it('a VM named with markup and quotes round-trips: created with that name, read back the same', async () => {
      const name = `test-<&>"' é  `;
      const pool = await resolvePath(session, '/DC0/host/DC0_C0/Resources');
      const task = await session.call<MoRef>('CreateVM_Task', dc.vmFolder, {
        config: { name, guestId: 'otherGuest', annotation: `made by ${name}`, files: { vmPathName: '[LocalDS_0]' }, numCPUs: 1, memoryMB: 32 },
        pool,
      });
      const created = (await waitForTask(session, task, { phase: 'create' })) as MoRef;
      assert.equal(created.type, 'VirtualMachine');
      const props = await vmProps(session, created, ['name', 'config.annotation']);
      assert.equal(props.name, name);
      assert.equal(props['config.annotation'], `made by ${name}`);
      assert.equal((await findVm(session, dc, name)).value, created.value);
      await waitForTask(session, await session.call<MoRef>('Destroy_Task', created), { phase: 'destroy' });
      await rejectsWith(findVm(session, dc, name), 'VM_NOT_FOUND');
    });
  });

  it('transfers datastore files with the session cookie and the same trust (session.transfer)', async () => {
    const session = await open();
    const file = '/folder/test-transfer.txt';
    const params = { dcPath: 'DC0', dsName: 'LocalDS_0' };
    const body = Buffer.from('vmdr <&> bytes\n');
    const put = await session.transfer.put(file, body, { params, headers: { 'Content-Type': 'application/octet-stream' }, validateStatus: () => true });
    assert.ok(put.status === 200 || put.status === 201, `PUT answered ${put.status}`);
    const got = await session.transfer.get(file, { params, responseType: 'arraybuffer' });
    assert.deepEqual(Buffer.from(got.data as ArrayBuffer), body);
    const anonymous = await fetchStatus(`${vcsim.url.replace(/\/sdk$/, '')}${file}?dcPath=DC0&dsName=LocalDS_0`);
    assert.equal(anonymous, 'refused', 'without a pinned trust, no transfer either');
    await rejectsWith(session.transfer.get(`https://127.0.0.2:${vcsim.port}${file}`), 'VSPHERE_INVALID_REQUEST');
  });

  it('a wrong password fails with VSPHERE_LOGIN_FAILED in one line that holds no password', async () => {
    const wrong = `wrong-${vcsim.password}`;
    process.env.VMDR_TEST_WRONG_PASSWORD = wrong;
    try {
      const err = await rejectsWith(VsphereSession.open(endpointOf(vcsim.uri(), { passwordEnv: 'VMDR_TEST_WRONG_PASSWORD' })), 'VSPHERE_LOGIN_FAILED');
      assert.equal(err.message.split('\n').length, 1);
      assert.match(err.message, /refused the login of "vmdr-test"/);
      for (const shown of [err.message, JSON.stringify(err.toJSON()), inspect(err, { depth: 10 })]) {
        assert.ok(!shown.includes(wrong) && !shown.includes(vcsim.password), shown);
      }
    } finally {
      delete process.env.VMDR_TEST_WRONG_PASSWORD;
    }
  });

  it('logs in with a password file of mode 0600 and refuses one of mode 0644 before connecting', async () => {
    const file = join(dir, 'vc.pw');
    await writeFile(file, `${vcsim.password}\n`, { mode: 0o600 });
    const session = await open(endpointOf(vcsim.uri(), { passwordFile: file }));
    assert.match(session.sessionKey ?? '', /\S/);
    const loose = join(dir, 'loose.pw');
    await writeFile(loose, vcsim.password, { mode: 0o644 });
    const err = await rejectsWith(VsphereSession.open(endpointOf(vcsim.uri(), { passwordFile: loose })), 'VSPHERE_PASSWORD_FILE_OPEN');
    assert.ok(!err.message.includes(vcsim.password));
  });

  it('after its session is terminated, the next calls log in again by themselves, once, and succeed', async () => {
    const first = await open();
    const second = await open();
    const before = first.sessionKey!;
    await second.call('TerminateSession', second.content.sessionManager, { sessionId: [before] });
    assert.ok(!(await sessionKeys(second)).includes(before));

    // Five calls at once on the dead session: they share one new login.
    const dc = await datacenter(second, 'DC0');
    const results = await Promise.all(Array.from({ length: 5 }, () => retrieve(first, { type: 'VirtualMachine', paths: ['name'], container: dc.vmFolder })));
    for (const vms of results) assert.ok(vms.length > 0);
    assert.notEqual(first.sessionKey, before);
    const keys = await sessionKeys(second);
    assert.ok(keys.includes(first.sessionKey!));
    assert.equal(keys.filter((k) => k !== second.sessionKey).length, sessions.filter((s) => s.sessionKey && s !== second).length, `one new session, not five: ${keys.join(', ')}`);
  });

  describe('whom it trusts', () => {
    it('refuses a certificate that is not the pinned one, naming both fingerprints, before any login reaches the simulator', async () => {
      const witness = await open();
      const sessionsBefore = await sessionKeys(witness);
      const pinned = `SHA256:${Array(32).fill('00').join(':')}`;
      const uri = vcsim.uri().replace(/thumbprint=[^&]+/, `thumbprint=${pinned}`);
      const err = await rejectsWith(VsphereSession.open(endpointOf(uri)), 'VSPHERE_CERTIFICATE_REFUSED');
      assert.ok(err.message.includes(vcsim.thumbprint) && err.message.includes(pinned), err.message);
      assert.deepEqual(await sessionKeys(witness), sessionsBefore, 'no session was made: no Login reached the simulator');
    });

    it('refuses its self-signed certificate without a thumbprint or CA, and trusts it with it as the CA file', async () => {
      const unpinned = vcsim.uri().replace(/\?thumbprint=[^&]+/, '');
      const err = await rejectsWith(VsphereSession.open(endpointOf(unpinned)), 'VSPHERE_CERTIFICATE_REFUSED');
      assert.match(err.message, /not trusted/);
      assert.ok(err.message.includes(vcsim.thumbprint), 'says which certificate it saw');

      const caFile = join(dir, 'vcsim-ca.pem');
      await writeFile(caFile, await vcsim.certificatePem());
      const session = await open(endpointOf(unpinned, { caFile }));
      assert.match(session.sessionKey ?? '', /\S/);
    });
  });

  describe('a hostile or dead endpoint (servers of the test’s own)', () => {
    let server: Server;
    let fingerprint: string;
    let written = 0;
    let requests = 0;
    let mode: 'endless' | 'silent' = 'endless';
    before(async () => {
      const identity = await ensureIdentity(join(dir, 'hostile'), 'hostile', ['127.0.0.1']);
      fingerprint = identity.fingerprint;
      server = createServer({ cert: identity.cert, key: identity.key }, (req, res) => {
        requests++;
        if (mode === 'silent') return; // answers nothing, ever
        res.writeHead(200, { 'content-type': 'text/xml' });
        const chunk = Buffer.alloc(1024 * 1024, 'x');
        const pump = () => {
          let more = true;
          while (!res.destroyed && more) {
            more = res.write(chunk);
            written += chunk.length;
          }
          if (!res.destroyed) res.once('drain', pump);
        };
        res.write('<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>');
        pump();
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    });
    after(async () => {
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
    });
    const hostileUri = () => `vsphere://u@127.0.0.1:${(server.address() as AddressInfo).port}/DC0?thumbprint=${fingerprint}`;

    it('with a pin that does not match, the server never receives a request (the login and its password stay here)', async () => {
      const before = requests;
      const uri = hostileUri().replace(/thumbprint=[^&]+/, `thumbprint=${vcsim.thumbprint}`);
      await rejectsWith(VsphereSession.open(endpointOf(uri)), 'VSPHERE_CERTIFICATE_REFUSED');
      assert.equal(requests, before);
    });

    it('an endless answer is cut off at the size limit (64 MiB), not read into memory', async () => {
      mode = 'endless';
      const started = Date.now();
      const err = await rejectsWith(VsphereSession.open(endpointOf(hostileUri())), 'VSPHERE_RESPONSE_TOO_LARGE');
      assert.match(err.message, /exceeded 67108864 bytes/);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.ok(written < 80 * 1024 * 1024, `the server could write ${written} bytes before the client hung up`);
      console.log(`      (cut off after ${Math.round(written / 1024 / 1024)} MiB written, ${Date.now() - started} ms)`);
    });

    it('a server that never answers fails with HYPERVISOR_TIMED_OUT at the deadline', async () => {
      mode = 'silent';
      const started = Date.now();
      const err = await rejectsWith(VsphereSession.open(endpointOf(hostileUri()), { callTimeoutMs: 500 }), 'HYPERVISOR_TIMED_OUT');
      assert.match(err.message, /RetrieveServiceContent/);
      assert.ok(Date.now() - started < 5_000);
    });

    it('nothing listening: HYPERVISOR_UNREACHABLE', async () => {
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const port = (closed.address() as AddressInfo).port;
      await new Promise((resolve) => closed.close(resolve));
      await rejectsWith(VsphereSession.open(endpointOf(`vsphere://u@127.0.0.1:${port}/DC0?thumbprint=${fingerprint}`)), 'HYPERVISOR_UNREACHABLE');
    });
  });
});

/** What plain Node (system CAs only) makes of an https URL: the self-signed simulator is refused. */
async function fetchStatus(url: string): Promise<number | 'refused'> {
  try {
    return (await fetch(url)).status;
  } catch {
    return 'refused';
  }
}

