/**
 * The vSphere part of `npm run bench:failover` (issue 14): what a failover onto a vSphere target
 * adds to the recovery time before the VM can even be powered on, namely the chosen recovery
 * point's disk materialized on the target's datastore (hypervisors/vsphere/boot-disks.ts: qemu-nbd
 * and nbdcopy read the qcow2 chain, the flat extent streams over the datastore HTTP API, then the
 * descriptor). Per GiB of allocated data, because that is what a user knows of a point.
 *
 * Points of a 1 GiB disk with 256 MiB and 1 GiB allocated (a chain of two qcow2 images, half of the
 * data in each, written by qemu-io), materialized into govmomi's simulator on loopback, against the
 * peers, the steps without vmdr: `qemu-img convert -O raw` of the same chain alone, and `curl -T` of
 * the same raw bytes to the same datastore URL. The order alternates from one repetition to the
 * next. The simulator writes to this machine's local disk: a real ESXi datastore over a LAN is
 * slower, and the extent always travels at its full virtual size (a flat extent has no holes over
 * HTTP), which on a LAN makes the allocated size matter less than the virtual size.
 *
 * `npm run bench:failover` runs it after the libvirt part; it also runs alone, without the lab
 * (only the simulator, QEMU's tools and curl): `npx tsx scripts/bench/failover-vsphere.ts`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { PointDisk } from '../../hypervisors/types.js';
import { materializePoint, removeMaterialized, type DiskPlace } from '../../hypervisors/vsphere/boot-disks.js';
import { deleteFile } from '../../hypervisors/vsphere/datastore.js';
import { parseVsphereUri } from '../../hypervisors/vsphere/endpoint.js';
import { VsphereSession } from '../../hypervisors/vsphere/session.js';
import { startVcsim } from '../../test/helpers/vcsim.js';
import { Cleanup, describeMachine, exec, GiB, MiB, runBench, say, table, timed, median } from './lab.js';

const PASSWORD_ENV = 'VMDR_BENCH_VSPHERE_PASSWORD';
const ALLOCATED = [256 * MiB, GiB];

interface Sample {
  vmdrMs: number;
  convertMs: number;
  curlMs: number;
}


/** A point as the replica keeps it: a base and an overlay on it, `allocated` bytes of data between them. */
async function makePoint(dir: string, allocated: number): Promise<PointDisk> {
  const name = `${allocated / MiB}m`;
  const base = join(dir, `${name}-base.qcow2`);
  const top = join(dir, `${name}-point.qcow2`);
  await exec('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(GiB)]);
  await exec('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x11 0 ${allocated / 2}`, base]);
  await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `${name}-base.qcow2`, '-F', 'qcow2', top], { cwd: dir });
  await exec('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x22 ${GiB / 2} ${allocated / 2}`, top]);
  return { target: 'vda', image: top, sizeBytes: GiB };
}

/** Runs the measurement and returns its markdown section. */
export async function benchVsphereMaterialize(cleanup: Cleanup, repeat: number): Promise<string[]> {
  const dir = await mkdtemp(join('/var/tmp', 'vmdr-bench-vsphere-'));
  cleanup.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  const vcsim = await startVcsim();
  cleanup.add('stop the simulator', () => vcsim.stop());
  process.env[PASSWORD_ENV] = vcsim.password;
  const session = await VsphereSession.open(parseVsphereUri(vcsim.uri(), { passwordEnv: PASSWORD_ENV }));
  cleanup.add('log out of the simulator', () => session.logout());
  const ca = join(dir, 'vcsim.pem');
  await writeFile(ca, await vcsim.certificatePem());
  const place: DiskPlace = { datacenter: 'DC0', datastore: 'LocalDS_0', folder: 'vmdr-bench' };
  const curlVersion = (await exec('curl', ['--version'])).stdout.split('\n')[0]!;

  const samples = new Map<number, Sample[]>(ALLOCATED.map((a) => [a, []]));
  const load: string[] = [];
  for (let rep = 1; rep <= repeat; rep += 1) {
    for (const allocated of ALLOCATED) {
      const disk = await makePoint(dir, allocated);
      load.push(loadavg()[0]!.toFixed(2));
      const boot = `bench-${rep}-${allocated / MiB}m`;
      const raw = join(dir, `${boot}.raw`);
      const vmdr = async () => {
        say(`vSphere rep ${rep}, ${allocated / MiB} MiB allocated: vmdr materializePoint`);
        const t = await timed(() => materializePoint(session, place, { boot, disks: [disk] }));
        await removeMaterialized(session, place, { boot, disks: [disk] });
        return t.ms;
      };
      const peers = async () => {
        say(`vSphere rep ${rep}, ${allocated / MiB} MiB allocated: qemu-img convert, curl -T`);
        const convert = await timed(() => exec('qemu-img', ['convert', '-O', 'raw', disk.image, raw]));
        // The simulator's built-in key is 1024-bit RSA, below Debian's OpenSSL default level:
        // curl still checks the certificate against it, at security level 1.
        const url = `${vcsim.url.replace(/\/sdk$/, '')}/folder/${place.folder}/${boot}-curl-flat.vmdk?dcPath=DC0&dsName=LocalDS_0`;
        const curl = await timed(() => exec('curl', ['-sS', '--fail', '--cacert', ca, '--ciphers', 'DEFAULT@SECLEVEL=1', '-T', raw, url]));
        await deleteFile(session, { datacenter: place.datacenter, datastore: place.datastore, path: `${place.folder}/${boot}-curl-flat.vmdk` });
        await rm(raw);
        return { convertMs: convert.ms, curlMs: curl.ms };
      };
      let vmdrMs: number;
      let peer: { convertMs: number; curlMs: number };
      if (rep % 2 === 1) {
        vmdrMs = await vmdr();
        peer = await peers();
      } else {
        peer = await peers();
        vmdrMs = await vmdr();
      }
      samples.get(allocated)!.push({ vmdrMs, ...peer });
      await rm(disk.image);
      await rm(disk.image.replace(/-point\.qcow2$/, '-base.qcow2'));
    }
  }

  load.push(loadavg()[0]!.toFixed(2));
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const list = (xs: number[]) => `[${xs.map((x) => (x / 1000).toFixed(2)).join(', ')}]`;
  const rows = ALLOCATED.map((allocated) => {
    const of = samples.get(allocated)!;
    const pick = (f: (x: Sample) => number) => of.map(f);
    const gib = allocated / GiB;
    const vmdrMs = median(pick((x) => x.vmdrMs));
    const both = pick((x) => x.convertMs + x.curlMs);
    return [
      `${allocated / MiB} MiB`,
      `${s(vmdrMs)} ${list(pick((x) => x.vmdrMs))}`,
      `${(vmdrMs / 1000 / gib).toFixed(2)} s`,
      `${((GiB / MiB) / (vmdrMs / 1000)).toFixed(0)} MiB/s`,
      `${s(median(pick((x) => x.convertMs)))} ${list(pick((x) => x.convertMs))}`,
      `${s(median(pick((x) => x.curlMs)))} ${list(pick((x) => x.curlMs))}`,
      `${s(median(both))}`,
      `${(vmdrMs / median(both)).toFixed(2)} ×`,
    ];
  });
  return [
    '### vSphere target: a recovery point materialized on the datastore',
    '',
    `A 1 GiB disk's point (a two-image qcow2 chain) materialized as a flat VMDK on the simulator's datastore LocalDS_0 ` +
      `(Debian's govmomi 0.24.2 simulator on loopback over TLS, writing to this machine's local disk; ${curlVersion}). ` +
      `${repeat} repetitions, order alternating; medians, every value in brackets. The extent travels at the full 1 GiB ` +
      'virtual size whatever is allocated; a real ESXi datastore over a LAN is slower than this loopback. ' +
      `1-min load average before each measurement and at the end: ${load.join(', ')}.`,
    '',
    table(
      ['allocated', 'vmdr materializePoint', 'per GiB allocated', 'extent rate (1 GiB)', 'qemu-img convert -O raw alone', 'curl -T of the raw bytes', 'convert + curl (the steps without vmdr)', 'vmdr / (convert + curl)'],
      rows,
    ),
    '',
  ];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runBench('bench:failover (vSphere)', async (cleanup) => {
    const machine = await describeMachine();
    const repeat = Number(process.env.BENCH_REPEAT ?? 3);
    const out = ['Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '', ...(await benchVsphereMaterialize(cleanup, repeat))];
    process.stdout.write(`${out.join('\n')}\n`);
  });
}
