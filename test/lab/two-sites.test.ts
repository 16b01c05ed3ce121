/**
 * The two-site lab is two hosts, and replication works across it: the source site's `vmdr serve`
 * ships a running VM to the DR site's receiver over the WAN, each reading its own config (with
 * `localSite`), state and storage. Losing the source site mid-cycle commits nothing on the DR side,
 * which keeps serving; the source site then comes back with its VM defined, and replication resumes.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { openAdapter } from '../../hypervisors/index.js';
import { diskDir } from '../../plugin/replication/layout.js';
import { pointFilesIn } from '../../plugin/replication/replica/files.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { bootLabVm, createLabVm, destroyLabVm, ensureLabGuest, labScratchDir, type LabVm } from '../helpers/lab.js';
import { hmpWrite } from '../helpers/patterns.js';
import { twoSites, writeTwoSiteConfigs, type LabSite, type TwoSiteConfigs, type TwoSites } from '../helpers/two-sites.js';
import type { ServeProcess } from '../helpers/vmdr-serve.js';

const MiB = 1024 * 1024;

interface Point {
  id: string;
  disks: { disk: string; image: string }[];
}

async function points(site: LabSite, config: string, protection: string): Promise<Point[]> {
  const r = await site.vmdr(['points', protection, '--json'], { config });
  assert.equal(r.code, 0, `vmdr points on site ${site.name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Point[];
}

/** Resolves when `check` finds what it looks for in the events a daemon printed so far. */
async function eventually<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await check();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The two images hold the same bytes, read inside `site` (qemu-img compare exits 0). */
async function assertSameBytes(site: LabSite, a: string, b: string): Promise<void> {
  const r = await site.exec('qemu-img', ['compare', '-U', a, b]);
  assert.equal(r.code, 0, `${a} and ${b} differ (read on site ${site.name}): ${r.stdout}${r.stderr}`);
}

async function virsh(site: LabSite, ...args: string[]): Promise<string> {
  const r = await site.exec('virsh', ['-q', ...args]);
  assert.equal(r.code, 0, `virsh ${args.join(' ')} on site ${site.name}: ${r.stderr}`);
  return r.stdout;
}

describe('the two-site lab: two hosts, and replication across them', function () {
  this.timeout(240_000);
  let lab: TwoSites;
  let vm: LabVm | undefined;
  let dir: string;
  let configs: TwoSiteConfigs;
  let drServe: ServeProcess | undefined;
  let sourceServe: ServeProcess | undefined;
  const opened: HypervisorAdapter[] = [];
  const protection = `test-2s-${process.pid.toString(36)}`;
  /** The source disk as it was at the first recovery point, copied on the source site. */
  let atFirstPoint: string;
  let first: Point;

  before(async () => {
    lab = await twoSites();
    await ensureLabGuest();
    dir = await labScratchDir('two-sites');
    atFirstPoint = join(dir, 'at-first-point.qcow2');
    vm = await createLabVm('2s', { marker: 'two-sites', diskSize: '96M', uri: lab.source.uri });
    configs = await writeTwoSiteConfigs(dir, {
      protections: `  - name: ${protection}
    source: { site: source, vm: ${vm.name} }
    rpo: 1h
    target: { site: dr, vm: ${protection}-dr, nics: [{ network: ${vm.network} }] }`,
    });
  });

  after(async () => {
    await Promise.allSettled([drServe?.stop(), sourceServe?.stop()]);
    // A test that failed after killing the source site leaves it down, and its VM defined there.
    if (lab && vm) {
      await lab.source.up().catch(() => undefined);
      vm.adapter = await adapterOf(lab.source.uri).catch(() => vm!.adapter);
    }
    await lab?.wanRate('off').catch(() => undefined);
    await destroyLabVm(vm);
    await Promise.allSettled(opened.map((a) => a.close()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const adapterOf = async (uri: string) => {
    const adapter = openAdapter(uri);
    await adapter.connect();
    opened.push(adapter);
    return adapter;
  };

  it('each site is a host of its own: its own VMs and networks, its own loopback', async () => {
    const [dr, root] = [await adapterOf(lab.dr.uri), await adapterOf('qemu:///system')];
    const names = async (a: HypervisorAdapter) => (await a.listVms()).map((v) => v.name);
    assert.ok((await names(vm!.adapter)).includes(vm!.name), 'the source site lists its VM');
    assert.ok(!(await names(dr)).includes(vm!.name), 'the DR site does not list the source site\'s VM');
    assert.ok(!(await names(root)).includes(vm!.name), 'this machine\'s own libvirtd does not list it');
    const networks = async (a: HypervisorAdapter) => (await a.listNetworks()).map((n) => n.name);
    assert.ok((await networks(vm!.adapter)).includes(vm!.network));
    assert.ok(!(await networks(dr)).includes(vm!.network), 'the DR site does not have the source site\'s network');
    // Inside the site, qemu:///system is that site's libvirtd.
    assert.match(await virsh(lab.source, 'list', '--all', '--name'), new RegExp(vm!.name));
    assert.doesNotMatch(await virsh(lab.dr, 'list', '--all', '--name'), new RegExp(vm!.name));

    // An NBD export on the DR site's 127.0.0.1 answers there, and not from the source site.
    const image = join(dir, 'loopback.qcow2');
    const pidFile = join(dir, 'loopback-nbd.pid');
    assert.equal((await lab.dr.exec('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1M'])).code, 0);
    const port = String(10809 + (process.pid % 1000));
    const started = await lab.dr.exec('qemu-nbd', ['--fork', '--pid-file', pidFile, '--persistent', '--read-only', '--bind', '127.0.0.1', '--port', port, '--format', 'qcow2', image]);
    assert.equal(started.code, 0, started.stderr);
    try {
      const here = await lab.dr.exec('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`]);
      assert.equal(here.code, 0, here.stderr);
      assert.equal(here.stdout.trim(), String(MiB));
      const there = await lab.source.exec('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`], { timeoutMs: 20_000 });
      assert.notEqual(there.code, 0, 'the source site reached the DR site\'s loopback');
      assert.match(there.stderr, /connect|refused/i);
    } finally {
      // The PID in the file is the DR site's own numbering: killed there.
      await lab.dr.exec('kill', [(await readFile(pidFile, 'utf8')).trim()]);
    }
  });

  it("the source site's `vmdr serve` replicates a running VM to the DR site's receiver over the WAN", async () => {
    await bootLabVm(vm!);
    await hmpWrite(vm!.name, 0, '0x5c', 8 * MiB, MiB, lab.source.uri);
    // localSite alone says which receiver each daemon runs: no --site, no --no-receive.
    drServe = await lab.dr.serve(configs.dr);
    const receivers = drServe.events.filter((e) => e.event === 'receiver');
    assert.deepEqual(receivers.map((e) => e.listening), [configs.endpoint.dr]);

    // Paused, the guest writes nothing between the cycle's checkpoint and the comparison.
    await virsh(lab.source, 'suspend', vm!.name);
    try {
      sourceServe = await lab.source.serve(configs.source, { args: [] });
      assert.deepEqual(sourceServe.events.filter((e) => e.event === 'receiver').map((e) => e.listening), [configs.endpoint.source]);
      const cycle = await eventually('committed cycle', () => sourceServe!.events.find((e) => e.event === 'cycle'), 90_000);
      assert.ok(cycle.result, `the first cycle failed: ${JSON.stringify(cycle)}`);
      const drPoints = await points(lab.dr, configs.dr, protection);
      assert.equal(drPoints.length, 1);
      first = drPoints[0]!;
      assert.equal(first.id, (cycle.result as { point: { id: string } }).point.id);
      const image = first.disks.find((d) => d.disk === 'vda')!.image;
      assert.ok(image.startsWith(configs.storage.dr), `${image} is in the DR site's storage`);
      await assertSameBytes(lab.dr, vm!.disk, image);
      const copy = await lab.source.exec('qemu-img', ['convert', '-U', '-O', 'qcow2', vm!.disk, atFirstPoint]);
      assert.equal(copy.code, 0, copy.stderr);
    } finally {
      await virsh(lab.source, 'resume', vm!.name);
    }
    // The source site keeps no replica: asked there, the points come from the DR site's receiver.
    assert.deepEqual((await points(lab.source, configs.source, protection)).map((p) => p.id), [first.id]);
    await sourceServe.stop();
    sourceServe = undefined;
  });

  it('the source site killed mid-cycle: nothing is committed, the DR site keeps serving, the source site comes back', async () => {
    // Incompressible, through QEMU's block layer (the dirty bitmap sees it), over a slow WAN: the
    // cycle takes seconds, and the kill lands while its frames travel.
    const data = join(dir, 'random.bin');
    await writeFile(data, randomBytes(24 * MiB));
    await chmod(data, 0o644);
    const write = await lab.source.exec('virsh', ['qemu-monitor-command', vm!.name, '--hmp', `qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -s ${data} ${40 * MiB} ${24 * MiB}"`]);
    assert.equal(write.code, 0, write.stderr);
    assert.doesNotMatch(write.stdout, /error|failed/i, write.stdout);
    await lab.wanRate('16mbit');

    const sync = lab.source.startVmdr(['sync', protection, '--json'], { config: configs.source });
    const ended = new Promise<number | string | null>((resolve) => sync.once('exit', (code, signal) => resolve(code ?? signal)));
    const shipping = await shippingPast(sync, 0.25, 90_000);
    // The DR site is writing the cycle's overlay: a point file beyond the committed one.
    const drDisk = diskDir(configs.storage.dr, { name: protection }, 'vda');
    assert.equal((await pointFilesIn(drDisk)).length, 2, 'the DR site writes the new overlay');
    const killedAt = Date.now();
    await lab.source.kill();
    assert.notEqual(await ended, 0, 'the sync ended with the site');
    assert.ok(shipping.total >= 24 * MiB, `the cycle was to ship the write: ${JSON.stringify(shipping)}`);

    // The DR side: still at the first point, its bytes intact, and `vmdr points` answers.
    assert.equal(drServe!.child.exitCode, null, 'the DR daemon still runs');
    assert.deepEqual((await points(lab.dr, configs.dr, protection)).map((p) => p.id), [first.id]);
    const image = first.disks.find((d) => d.disk === 'vda')!.image;
    await assertSameBytes(lab.dr, atFirstPoint, image);
    assert.equal((await lab.dr.exec('qemu-img', ['check', '-U', image])).code, 0);
    // The DR site notices the lost peer and discards the half-written overlay.
    await eventually('discarded overlay', async () => ((await pointFilesIn(drDisk)).length === 1 ? true : undefined), 60_000);
    process.stdout.write(`      (the DR site discarded the overlay ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill)\n`);

    // The source site comes back as a rebooted host would: its VM defined, shut off.
    await lab.source.up();
    const source = await adapterOf(lab.source.uri);
    vm!.adapter = source;
    assert.equal(await source.powerState(vm!.name), 'shutoff');
    // Replication resumes from what the DR site really holds: the shut-off VM's disk, read from
    // its image, becomes the second point, equal to it byte for byte.
    const again = await lab.source.vmdr(['sync', protection, '--json'], { config: configs.source });
    assert.equal(again.code, 0, again.stderr);
    const after = await points(lab.dr, configs.dr, protection);
    assert.equal(after.length, 2);
    await assertSameBytes(lab.dr, vm!.disk, after[1]!.disks.find((d) => d.disk === 'vda')!.image);
  });
});

/** Resolves with the sync's first `ship` progress past `fraction` of its total (JSON lines on stdout). */
function shippingPast(child: ChildProcess, fraction: number, timeoutMs: number): Promise<{ done: number; total: number }> {
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
    const timer = setTimeout(() => reject(new Error(`the sync shipped less than ${fraction * 100} % within ${timeoutMs} ms: ${err}`)), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the sync ended (${code}) before it shipped ${fraction * 100} %: ${err}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const event = JSON.parse(line) as { event?: string; phase?: string; done?: number; total?: number };
      if (event.event === 'progress' && event.phase === 'ship' && event.total! > 0 && event.done! >= event.total! * fraction && event.done! < event.total!) {
        clearTimeout(timer);
        resolve({ done: event.done!, total: event.total! });
      }
    });
  });
}
