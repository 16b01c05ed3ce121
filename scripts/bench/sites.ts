/**
 * `npm run bench:sites` (issue 10): vmdr measured on the two-site lab (scripts/lab/sites), two
 * namespaced hosts joined by a veth WAN, against figures taken in the same run:
 *   1. at `wan-rate 200mbit`: the link's own rate (a plain TCP transfer of the same byte count
 *      from the source site to the DR site), then the initial sync (`vmdr sync P --full --json` run
 *      inside the source site) of a disk holding incompressible data (shipped bytes / ship time
 *      against the link rate, target >= 90 %) and of a disk holding log-like text (disk bytes per
 *      second against the link rate, target: faster than the link);
 *   2. the incremental cycle (160 scattered 64 KiB writes, then `vmdr sync`) across the sites with
 *      no rate limit and at 200mbit, against the same writes and cycle on one host (this machine's
 *      own libvirtd, a one-host config), medians of a few cycles;
 *   3. planned failover RTO and data-loss window (`vmdr failover P --planned --json` on the DR
 *      site), then failback bytes on the wire against bytes changed on the DR side (`vmdr failback
 *      P --json`): each section prints "not measured: <the error>" when its command fails.
 * Prints a markdown report on stdout (progress on stderr); removes what it made (VMs and networks
 * in both sites and on this host, files, the WAN rate) however it ends. Traffic stays on the
 * veth between the sites, loopback and isolated bridges.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter } from '../../hypervisors/types.js';
import { freeLoopbackPort } from '../../plugin/replication/sender/nbd-port.js';
import { ensureLabGuest, GUEST_READY, labBoot, labScratchDir, waitForSerialLine } from '../../test/helpers/lab.js';
import { twoSites, writeTwoSiteConfigs, type LabSite, type TwoSites } from '../../test/helpers/two-sites.js';
import {
  applyWrites, bootVm, Cleanup, describeMachine, exec, GiB, makeDataDisk, makeWrites, mib, MiB, openLab, runBench, say, seconds,
  median, startVmdr, table, vmdrJson, WRITE_SIZE, WRITES, type Write,
} from './lab.js';

/** How long a guest may take to shut down (the lab guest never does: it ignores ACPI). */
const SHUTDOWN_TIMEOUT = '5s';
const DISK_SIZE = GiB;
const DATA_FILES = 16; // 16 × 16 MiB = 256 MiB of data on each initial-sync disk
const CYCLES = Number(process.env.BENCH_CYCLES ?? 3);
const RATE = '200mbit';
const BYTES_CHANGED = WRITES * WRITE_SIZE;

const mbit = (bytes: number, ms: number) => (bytes * 8) / (ms / 1000) / 1e6;
const rate = (bytes: number, ms: number) => `${mbit(bytes, ms).toFixed(1)} Mbit/s`;
const oneLine = (err: unknown) => ((err as Error).message ?? String(err)).trim().split('\n')[0]!;
const yes = (b: boolean) => (b ? 'yes' : 'no');

interface SyncRun {
  wallMs: number;
  /** First to last `ship` progress event (unit bytes), as the CLI printed them. */
  shipMs: number;
  kind: string;
  bytesShipped: number;
  bytesCovered: number;
  dataBytes: number;
  durationMs: number;
}

/** `vmdr sync P --json` inside the site; the ship phase timed from its progress lines' arrival. */
async function siteSync(site: LabSite, config: string, protection: string, extra: string[] = []): Promise<SyncRun> {
  const t0 = performance.now();
  const child = site.startVmdr(['sync', protection, '--json', ...extra], { config });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4096)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let shipFirst: number | undefined;
  let shipLast: number | undefined;
  let result: Record<string, unknown> | undefined;
  for await (const line of createInterface({ input: child.stdout! })) {
    if (!line.trim()) continue;
    const event = JSON.parse(line) as Record<string, unknown>;
    if (event.event === 'progress' && event.phase === 'ship' && event.unit === 'bytes') {
      shipFirst ??= performance.now();
      shipLast = performance.now();
    }
    if (event.event === 'result') result = event;
  }
  const code = await exited;
  const wallMs = performance.now() - t0;
  if (code !== 0 || !result) throw new Error(`vmdr sync ${protection} on site ${site.name} exited with ${code}: ${stderr.trim().split('\n').pop()}`);
  const r = result as { kind: string; bytesShipped: number; bytesCovered: number; durationMs: number; point: { dataBytes: number } };
  return { wallMs, shipMs: shipFirst === undefined ? NaN : shipLast! - shipFirst, kind: r.kind, bytesShipped: r.bytesShipped, bytesCovered: r.bytesCovered, dataBytes: r.point.dataBytes, durationMs: r.durationMs };
}

/**
 * A plain TCP transfer of `bytes` from the source site to the DR site's WAN address: the link's own
 * rate, timed by the receiver from the first byte to the last.
 */
async function linkTransfer(lab: TwoSites, bytes: number): Promise<{ ms: number; bytes: number }> {
  const port = String(await freeLoopbackPort());
  const receiver = lab.dr.exec(process.execPath, ['-e', `
    const s = require('node:net').createServer((c) => {
      let n = 0, t0;
      c.on('data', (b) => { t0 ??= performance.now(); n += b.length; });
      c.on('end', () => process.stdout.write(JSON.stringify({ ms: performance.now() - t0, bytes: n }), () => process.exit(0)));
    });
    s.listen(Number(process.argv[2]), process.argv[1]);
    setTimeout(() => process.exit(2), 300000);`, lab.dr.wanAddress, port], { timeoutMs: 310_000 });
  const sent = await lab.source.exec(process.execPath, ['-e', `
    const [host, port, total] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
    const chunk = require('node:crypto').randomBytes(1 << 20);
    const go = (tries) => {
      const c = require('node:net').connect(port, host);
      c.once('error', (e) => (tries > 0 ? setTimeout(() => go(tries - 1), 100) : (console.error(e.message), process.exit(1))));
      c.once('connect', async () => {
        for (let left = total; left > 0; left -= chunk.length) {
          if (!c.write(left >= chunk.length ? chunk : chunk.subarray(0, left))) await new Promise((r) => c.once('drain', r));
        }
        c.end();
        c.resume();
      });
    };
    go(100);`, lab.dr.wanAddress, port, String(bytes)], { timeoutMs: 310_000 });
  if (sent.code !== 0) throw new Error(`TCP transfer between the sites: the sender failed: ${sent.stderr.trim()}`);
  // The sender is done once the receiver has every byte: it ends within a moment.
  const got = await Promise.race([receiver, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('TCP transfer between the sites: the receiver did not end')), 30_000).unref())]);
  if (got.code !== 0) throw new Error(`TCP transfer between the sites: the receiver failed: ${got.stderr.trim()}`);
  return JSON.parse(got.stdout) as { ms: number; bytes: number };
}

/** Defines and boots a lab VM on one of the sites' libvirtd, removed at cleanup. */
async function bootSiteVm(adapter: HypervisorAdapter, cleanup: Cleanup, name: string, disk: string, log: string, network: string): Promise<void> {
  await adapter.defineVm({ name, memoryMiB: 256, vcpus: 1, boot: labBoot(), disks: [{ path: disk, format: 'qcow2', target: 'vda' }], nics: [{ network }], serialLog: log });
  cleanup.add(`remove VM ${name}`, () => removeVm(adapter, name));
  await adapter.start(name);
  await waitForSerialLine({ vm: name, file: log, pattern: GUEST_READY, timeoutMs: 180_000 });
}

async function removeVm(adapter: HypervisorAdapter, name: string): Promise<void> {
  await adapter.stop(name, { mode: 'force' }).catch(() => undefined);
  await adapter.undefine(name);
}

async function cycles(label: string, n: number, writeThem: () => Promise<void>, sync: () => Promise<{ wallMs: number; durationMs: number; bytesShipped: number; kind: string }>) {
  const runs: { wallMs: number; durationMs: number; bytesShipped: number }[] = [];
  for (let i = 0; i < n; i += 1) {
    await writeThem();
    const r = await sync();
    if (r.kind !== 'incremental') throw new Error(`${label}: cycle ${i + 1} was ${r.kind}, not incremental`);
    say(`${label}: cycle ${i + 1}: ${seconds(r.wallMs)} wall, ${seconds(r.durationMs)} in-process, ${mib(r.bytesShipped)} shipped`);
    runs.push({ wallMs: r.wallMs, durationMs: r.durationMs, bytesShipped: r.bytesShipped });
  }
  return runs;
}

async function main(cleanup: Cleanup): Promise<void> {
  await ensureLabGuest();
  const machine = await describeMachine();
  say('two-site lab up');
  const lab = await twoSites();
  cleanup.add('WAN rate off', () => lab.wanRate('off'));
  await lab.wanRate('off');
  const tag = randomBytes(3).toString('hex');
  const dir = await labScratchDir('bench-sites');
  cleanup.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  const adapters: Record<'source' | 'dr', HypervisorAdapter> = { source: openAdapter(lab.source.uri), dr: openAdapter(lab.dr.uri) };
  for (const a of Object.values(adapters)) {
    await a.connect();
    cleanup.add('close libvirt connection', () => a.close());
  }
  // The guests' network on both sites: the DR site's targets need one of the same name.
  const network = `test-net-bs-${tag}`;
  for (const [name, a] of Object.entries(adapters)) {
    await a.ensureIsolatedNetwork({ name: network });
    cleanup.add(`remove network ${network} on site ${name}`, () => a.removeNetwork(network));
  }

  const vms = { random: `test-bs-rand-${tag}`, text: `test-bs-text-${tag}` };
  say(`building two 1 GiB disks with ${DATA_FILES * 16} MiB of files each (random, text) in ${dir}`);
  const disks = { random: join(dir, 'random.qcow2'), text: join(dir, 'text.qcow2') };
  await makeDataDisk(dir, disks.random, vms.random, DISK_SIZE, Array(DATA_FILES).fill('random'));
  await makeDataDisk(dir, disks.text, vms.text, DISK_SIZE, Array(DATA_FILES).fill('text'));
  const allocated = async (disk: string) => (JSON.parse((await exec('qemu-img', ['info', '--output=json', disk])).stdout) as { 'actual-size': number })['actual-size'];
  const allocatedRandom = await allocated(disks.random);
  const allocatedText = await allocated(disks.text);
  const boot = labBoot();
  const configs = await writeTwoSiteConfigs(join(dir, 'sites'), {
    protections: Object.values(vms)
      .map(
        (vm) => `  - name: ${vm}
    source: { site: source, vm: ${vm} }
    target:
      site: dr
      vm: ${vm}-dr
      boot: { kind: kernel, kernel: ${boot.kernel}, initrd: ${boot.initrd} }
      nics: [{ network: ${network} }]`,
      )
      .join('\n'),
  });
  cleanup.add(`remove the DR site's targets`, async () => {
    for (const vm of Object.values(vms)) await removeVm(adapters.dr, `${vm}-dr`).catch(() => undefined);
  });
  say('vmdr serve on the DR site');
  const drServe = await lab.dr.serve(configs.dr);
  cleanup.add('stop vmdr serve on the DR site', () => drServe.stop());
  for (const [kind, vm] of Object.entries(vms)) {
    say(`booting ${vm} on the source site`);
    await bootSiteVm(adapters.source, cleanup, vm, disks[kind as keyof typeof disks], join(dir, `${kind}.log`), network);
  }

  // ---- 1. initial sync at 200mbit against the link's own rate
  await lab.wanRate(RATE);
  say(`link: ${mib(allocatedRandom)} over TCP from the source site to the DR site at ${RATE}`);
  const link = await linkTransfer(lab, allocatedRandom);
  say(`link: ${rate(link.bytes, link.ms)}`);
  say('initial sync of the random disk');
  const fullRandom = await siteSync(lab.source, configs.source, vms.random, ['--full']);
  say(`random: ${mib(fullRandom.bytesShipped)} in ${seconds(fullRandom.shipMs)} ship, ${seconds(fullRandom.wallMs)} wall`);
  say('initial sync of the text disk');
  const fullText = await siteSync(lab.source, configs.source, vms.text, ['--full']);
  say(`text: ${mib(fullText.bytesShipped)} shipped for ${mib(fullText.dataBytes)} of data in ${seconds(fullText.shipMs)} ship, ${seconds(fullText.wallMs)} wall`);
  await lab.wanRate('off');

  // ---- 2. incremental cycles across the sites (no limit, 200mbit) and on one host
  const writes: Write[] = await makeWrites(dir, DISK_SIZE);
  const across: Record<string, Awaited<ReturnType<typeof cycles>>> = {};
  for (const r of ['off', RATE]) {
    await lab.wanRate(r);
    across[r] = await cycles(`two sites, WAN ${r === 'off' ? 'unlimited' : r}`, CYCLES, () => applyWrites(vms.random, writes, lab.source.uri), () => siteSync(lab.source, configs.source, vms.random));
  }
  await lab.wanRate('off');
  say('one host: the same writes and cycles on this machine\'s own libvirtd');
  const one = await openLab(cleanup, 'sites1');
  const oneVm = `test-bench-${one.tag}`;
  const oneDisk = join(one.dir, 'vda.qcow2');
  await makeDataDisk(one.dir, oneDisk, oneVm, DISK_SIZE, []);
  await bootVm(one, cleanup, oneVm, oneDisk);
  const { config: oneConfig } = await startVmdr(one, cleanup, [{ name: oneVm }]);
  await vmdrJson(['sync', oneVm, '--config', oneConfig]);
  const oneHost = await cycles('one host', CYCLES, () => applyWrites(oneVm, writes), async () => {
    const s = await vmdrJson(['sync', oneVm, '--config', oneConfig]);
    const r = s.lines.find((l) => l.event === 'result') as { kind: string; bytesShipped: number; durationMs: number };
    return { wallMs: s.ms, ...r };
  });

  // ---- 3. planned failover, then failback (guarded: these need the cross-site failover and failback)
  let failoverSection: string[];
  let failbackSection: string[];
  let failedOver = false;
  try {
    say('planned failover of the random VM: vmdr serve on the source site, target provision and failover --planned on the DR site');
    const sourceServe = await lab.source.serve(configs.source);
    cleanup.add('stop vmdr serve on the source site', () => sourceServe.stop());
    // The DR site stages its target; it reads the source VM's disks from the source site's
    // endpoint. When that fails, the failover's own error says what is missing.
    const provision = await lab.dr.vmdr(['target', 'provision', vms.random, '--json'], { config: configs.dr });
    if (provision.code !== 0) say(`vmdr target provision on the DR site exited with ${provision.code}: ${provision.stderr.trim().split('\n').pop()}`);
    const t0 = performance.now();
    // The lab guest has no ACPI daemon: a graceful shutdown is never answered, so the source is
    // powered off after SHUTDOWN_TIMEOUT; the RTO includes that wait (a real guest's shutdown).
    const f = await lab.dr.vmdr(['failover', vms.random, '--planned', '--shutdown-timeout', SHUTDOWN_TIMEOUT, '--json'], { config: configs.dr });
    const wallMs = performance.now() - t0;
    if (f.code !== 0) throw new Error(`vmdr failover --planned exited with ${f.code}: ${f.stderr.trim().split('\n').pop()}`);
    failedOver = true;
    const report = JSON.parse(f.stdout.trim().split('\n').pop()!) as { kind: string; status: string; rtoMs: number; vms: { protection: string; dataLossWindowMs: number | null; point: { id: string } | null; steps: { step: string; durationMs: number | null }[] }[] };
    const v = report.vms[0]!;
    failoverSection = [
      table(
        ['kind', 'status', 'RTO (report rtoMs)', 'command wall time', 'data-loss window', 'point'],
        [[report.kind, report.status, seconds(report.rtoMs), seconds(wallMs), v.dataLossWindowMs === null ? '-' : seconds(v.dataLossWindowMs), v.point?.id ?? '-']],
      ),
      '',
      `Steps: ${v.steps.map((s) => `${s.step} ${s.durationMs === null ? '-' : seconds(s.durationMs)}`).join(', ')}.`,
    ];
  } catch (err) {
    failoverSection = [`not measured: ${oneLine(err)}`];
  }
  try {
    if (!failedOver) throw new Error('no failover to fail back from (see the section above)');
    say(`failback: ${WRITES} writes of 64 KiB on the DR VM, then vmdr failback on the DR site`);
    // Other offsets and bytes than the cycles wrote: what the DR VM changes, the source lacks.
    await applyWrites(`${vms.random}-dr`, await makeWrites(dir, DISK_SIZE, 161), lab.dr.uri);
    const t0 = performance.now();
    const b = await lab.dr.vmdr(['failback', vms.random, '--shutdown-timeout', SHUTDOWN_TIMEOUT, '--json'], { config: configs.dr });
    const wallMs = performance.now() - t0;
    if (b.code !== 0) throw new Error(`vmdr failback exited with ${b.code}: ${b.stderr.trim().split('\n').pop()}`);
    const report = JSON.parse(b.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    // The pass figures by name, wherever the report keeps them: bytes compared and bytes sent.
    const passes: { compared: number; sent: number }[] = [];
    const walk = (o: unknown): void => {
      if (Array.isArray(o)) return o.forEach(walk);
      if (!o || typeof o !== 'object') return;
      const r = o as Record<string, unknown>;
      if (typeof r.bytesCompared === 'number' && typeof r.bytesSent === 'number') passes.push({ compared: r.bytesCompared, sent: r.bytesSent });
      else Object.values(r).forEach(walk);
    };
    walk(report);
    const sent = passes.reduce((s, p) => s + p.sent, 0);
    failbackSection = [
      table(
        ['bytes changed on the DR side', 'passes', 'bytes compared (per pass)', 'bytes sent (per pass)', 'sent / changed', 'command wall time'],
        [[mib(BYTES_CHANGED), passes.length, passes.map((p) => mib(p.compared)).join(', '), passes.map((p) => mib(p.sent)).join(', '), (sent / BYTES_CHANGED).toFixed(3), seconds(wallMs)]],
      ),
    ];
  } catch (err) {
    failbackSection = [`not measured: ${oneLine(err)}`];
  }

  // ---- report
  const linkMbit = mbit(link.bytes, link.ms);
  const randomRatio = mbit(fullRandom.bytesShipped, fullRandom.shipMs) / linkMbit;
  const textDiskRatio = mbit(fullText.bytesCovered, fullText.shipMs) / linkMbit;
  const textDataRatio = mbit(fullText.dataBytes, fullText.shipMs) / linkMbit;
  const out: string[] = [];
  out.push(`## Two-site benchmark run of ${machine.date!.slice(0, 10)}`, '');
  out.push('Machine:', '', ...Object.entries(machine).map(([k, v]) => `- ${k}: ${v}`), '');
  out.push(
    `Lab: scripts/lab/sites, the source site (198.18.0.1) and the DR site (198.18.0.2) as two network + mount + PID namespaces, each with its own libvirtd, joined by a veth; ` +
      `\`wan-rate ${RATE}\` is tc tbf on both ends. \`vmdr serve\` runs on the DR site, \`vmdr sync\` inside the source site, over mutual TLS. ` +
      `Guests: 1 vCPU, 256 MiB, TCG.`,
    '',
  );
  out.push(`### Initial sync at ${RATE}`, '');
  out.push(
    `Disks: 1 GiB qcow2, ext4 with ${DATA_FILES} files of 16 MiB: random (${mib(allocatedRandom)} allocated) or log-like text (${mib(allocatedText)} allocated). ` +
      `Ship time: the first to the last \`ship\` progress line of \`vmdr sync --full --json\` (unit bytes), as they arrived.`,
    '',
  );
  out.push(
    table(
      ['transfer', 'bytes on the wire', 'ship time', 'whole command', 'rate', 'against the link', 'target', 'met'],
      [
        ['plain TCP, source → DR (the link)', mib(link.bytes), seconds(link.ms), '-', rate(link.bytes, link.ms), '1.00', '', ''],
        ['vmdr sync --full, random disk', mib(fullRandom.bytesShipped), seconds(fullRandom.shipMs), seconds(fullRandom.wallMs), rate(fullRandom.bytesShipped, fullRandom.shipMs), `${(randomRatio * 100).toFixed(1)} % (wire bytes / ship time)`, '>= 90 %', yes(randomRatio >= 0.9)],
        ['vmdr sync --full, text disk', mib(fullText.bytesShipped), seconds(fullText.shipMs), seconds(fullText.wallMs), `${rate(fullText.bytesCovered, fullText.shipMs)} of disk`, `${textDiskRatio.toFixed(2)} × (disk bytes covered / ship time); data alone ${textDataRatio.toFixed(2)} ×`, '> 1 ×', yes(textDiskRatio > 1)],
      ],
    ),
    '',
  );
  out.push(
    `- random: covered ${mib(fullRandom.bytesCovered)}, data ${mib(fullRandom.dataBytes)}, wire ${mib(fullRandom.bytesShipped)}; in-process ${seconds(fullRandom.durationMs)}.`,
    `- text: covered ${mib(fullText.bytesCovered)}, data ${mib(fullText.dataBytes)}, wire ${mib(fullText.bytesShipped)} (${(fullText.dataBytes / fullText.bytesShipped).toFixed(2)} × smaller); in-process ${seconds(fullText.durationMs)}.`,
    `- The incompressible initial sync ${randomRatio >= 0.9 ? 'meets' : 'does not meet'} the 90 % target: ${(randomRatio * 100).toFixed(1)} % of the link's measured rate.`,
    '',
  );
  out.push('### Incremental cycle', '');
  out.push(
    `${WRITES} writes of 64 KiB (32 KiB random + 32 KiB text) at seeded scattered offsets through HMP \`qemu-io write -s\` (${mib(BYTES_CHANGED)} changed), then \`vmdr sync P --json\`; ` +
      `the same writes each cycle; medians of ${CYCLES} cycles (values in brackets). One host: the same on this machine's own libvirtd, receiver on loopback (one-host config).`,
    '',
  );
  const oneMedian = median(oneHost.map((r) => r.wallMs));
  const rows = [['one host (loopback)', oneHost] as const, ['two sites, WAN unlimited', across.off!] as const, [`two sites, WAN ${RATE}`, across[RATE]!] as const];
  out.push(
    table(
      ['where', 'cycle (whole command)', 'in-process', 'shipped', 'against one host'],
      rows.map(([where, runs]) => [
        where,
        `${seconds(median(runs.map((r) => r.wallMs)))} [${runs.map((r) => (r.wallMs / 1000).toFixed(2)).join(', ')}]`,
        seconds(median(runs.map((r) => r.durationMs))),
        mib(median(runs.map((r) => r.bytesShipped))),
        `${(median(runs.map((r) => r.wallMs)) / oneMedian).toFixed(2)} ×`,
      ]),
    ),
    '',
  );
  out.push(
    '### Planned failover (source reachable)',
    '',
    `Started on the DR site; the source site stops its VM (\`--shutdown-timeout ${SHUTDOWN_TIMEOUT}\`: the lab guest has no ACPI daemon, so it is powered off when that runs out, and the RTO includes the wait) and ships the final delta.`,
    '',
    ...failoverSection,
    '',
  );
  out.push(
    '### Failback',
    '',
    `The DR VM writes ${WRITES} × 64 KiB at other offsets and with other bytes than the cycles above, then \`vmdr failback\` on the DR site (same shutdown timeout).`,
    '',
    ...failbackSection,
    '',
  );
  process.stdout.write(`${out.join('\n')}\n`);
  process.stdout.write(`\n<!-- raw: ${JSON.stringify({ link, fullRandom, fullText, across, oneHost })} -->\n`);
}

runBench('bench:sites', main);
