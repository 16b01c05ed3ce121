/**
 * A remote URI that works, on the real lab: `qemu+tcp://127.0.0.1:PORT/system` through libvirt's
 * own remote driver and its TCP transport. This machine's libvirtd listens on its Unix socket
 * only, so the test puts a TCP listener on loopback in front of that socket (what a libvirtd with
 * listen_tcp would be to its client: the RPC protocol over TCP). Through it, vmdr lists and reads
 * VMs, starts and stops one, gets libvirt's own error codes, and notices the link cut: the call
 * fails typed and the next one, on a link that is back, works.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { rejectsWith } from '../helpers/assertions.js';
import { bootLabVm, createLabVm, destroyLabVm, runVmdr, type LabVm } from '../helpers/lab.js';

const LIBVIRT_SOCKET = '/var/run/libvirt/libvirt-sock';

/** A TCP listener on 127.0.0.1 whose every connection is a connection to libvirtd's socket. */
class TcpToLibvirtd {
  private readonly links = new Set<Socket>();
  private server: Server | undefined;

  async listen(port = 0): Promise<number> {
    this.server = createServer((client) => {
      const daemon = connect(LIBVIRT_SOCKET);
      for (const s of [client, daemon]) {
        this.links.add(s);
        s.on('error', () => undefined).on('close', () => (this.links.delete(s), client.destroy(), daemon.destroy()));
      }
      client.pipe(daemon).pipe(client);
    });
    this.server.listen(port, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as { port: number }).port;
  }

  /** The link cut, as a WAN that drops: every connection reset, nobody listening. */
  async cut(): Promise<void> {
    for (const s of this.links) s.destroy();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}

describe('a remote URI: qemu+tcp:// through libvirt\'s remote driver (qemu:///system behind TCP on loopback)', function () {
  this.timeout(180_000);
  let vm: LabVm;
  let link: TcpToLibvirtd;
  let port: number;
  let uri: string;
  let adapter: HypervisorAdapter;

  before(async () => {
    vm = await createLabVm('tcp', { marker: 'tcp-src', diskSize: '32M' });
    link = new TcpToLibvirtd();
    port = await link.listen();
    uri = `qemu+tcp://127.0.0.1:${port}/system`;
    adapter = openAdapter(uri, { callTimeoutMs: 20_000 });
  });

  after(async () => {
    await adapter?.close();
    await link?.cut();
    await destroyLabVm(vm);
  });

  it('lists, reads, starts and stops VMs, and vmdr vm list shows them', async () => {
    assert.ok((await adapter.listVms()).some((v) => v.name === vm.name));
    assert.equal(await adapter.powerState(vm.name), 'shutoff');
    await bootLabVm({ ...vm, adapter });
    assert.equal(await adapter.powerState(vm.name), 'running');
    await adapter.stop(vm.name, { mode: 'force' });
    assert.equal(await adapter.powerState(vm.name), 'shutoff');
    const cli = await runVmdr(['vm', 'list', '--host', uri, '--json']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.ok((JSON.parse(cli.stdout) as { name: string }[]).some((v) => v.name === vm.name));
  });

  it("keeps libvirt's own error codes over the wire", async () => {
    const missing = await rejectsWith(adapter.powerState('no-such-vm-over-tcp'), 'VM_NOT_FOUND');
    assert.deepEqual(missing.libraryFailure, { library: 'libvirt', code: 42, domain: 10 });
  });

  it('a cut link fails the call typed, one line in the CLI; the next call after the link is back works', async () => {
    await link.cut();
    await rejectsWith(adapter.listVms(), 'HYPERVISOR_UNREACHABLE');
    const cli = await runVmdr(['vm', 'list', '--host', uri]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, new RegExp(`^vmdr: cannot reach hypervisor qemu\\+tcp://127\\.0\\.0\\.1:${port}/system.*\\n$`));
    await link.listen(port);
    assert.ok((await adapter.listVms()).some((v) => v.name === vm.name));
  });
});
