/**
 * The demo: vmdr's main job on the lab, end to end, narrated, on two sites. The source site and the
 * DR site are two hosts (scripts/lab/sites: namespaces with their own libvirtd, /run and loopback,
 * joined by a WAN link); every `vmdr` command runs on the site it belongs to, with that site's own
 * config (the lab config, with `localSite` and a state file per site). Run through ./scripts/demo,
 * which sets the machine up first. It grows with each capability the product gains.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { parseDocument } from 'yaml';
import { openAdapter } from '../../hypervisors/index.js';
import { loadConfig } from '../../plugin/config/load.js';
import { ensureProductionVm, LAB_DIR } from './production.js';
import { signalThroughNsenter } from './site-process.js';

const exec = promisify(execFile);
const TEMPLATE = process.argv[2] ?? 'templates/examples/lab.yaml';
const ROOT = join(import.meta.dirname, '..', '..', '..');
const VMDR = join(import.meta.dirname, '..', 'vmdr.js');
const SITES = join(ROOT, 'scripts', 'lab', 'sites');
const HERE = join(LAB_DIR, 'two-sites');

/** The config's sites on the lab's two hosts: the source site on the lab's `source`, the DR site on `dr`. */
const LAB_HOST = { prod: 'source', dr: 'dr' } as const;
const WAN = { source: '198.18.0.1', dr: '198.18.0.2' } as const;
type SiteName = keyof typeof LAB_HOST;
const labUri = (site: SiteName) => `qemu+unix:///system?socket=/var/lib/vmdr-lab/sites/${LAB_HOST[site]}/run-libvirt/libvirt-sock`;

function step(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

/** `vmdr ARGS` on `site`'s host, with that site's config; output goes to the terminal. */
function vmdr(site: SiteName, ...args: string[]): Promise<void> {
  process.stdout.write(`[${site}]$ vmdr ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(SITES, ['exec', LAB_HOST[site], '--', process.execPath, VMDR, ...args, '--config', configOf(site)], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`vmdr ${args.join(' ')} on site ${site} exited with ${code}`))));
  });
}

/** Output of `vmdr ARGS --json` on `site`, for the demo's own use (pairing reads the peer's identity). */
async function vmdrOutput(site: SiteName, ...args: string[]): Promise<string> {
  const { stdout } = await exec(SITES, ['exec', LAB_HOST[site], '--', process.execPath, VMDR, ...args, '--config', configOf(site)]);
  return stdout;
}

/** `vmdr serve` on `site`'s host in the background; resolves once it is ready. */
async function serve(site: SiteName, ...args: string[]): Promise<ChildProcess> {
  process.stdout.write(`[${site}]$ vmdr serve ${args.join(' ')} &\n`);
  const child = spawn(SITES, ['exec', LAB_HOST[site], '--', process.execPath, VMDR, 'serve', ...args, '--config', configOf(site)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      process.stdout.write(`[${site} serve] ${line}\n`);
      if (line.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`vmdr serve on site ${site} exited with ${code}`)));
  });
  return child;
}

async function stopServe(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await signalThroughNsenter(child, 'SIGTERM');
  await exited;
}

const configOf = (site: SiteName) => join(HERE, `${site}.yaml`);

/** Where the demo's drill tells the provider's ticket system: an HTTP endpoint on the DR host's own loopback. */
const TICKETS = 'http://127.0.0.1:18080/drills';
const RUNBOOK = () => join(HERE, 'acme-drill.yaml');

/**
 * The drill's runbook (templates/runbooks/acme-drill.yaml, with the demo's own script and
 * endpoint): the groups in order, a check of each web VM by a script, the ticket system told.
 */
async function writeRunbook(): Promise<void> {
  const script = join(HERE, 'check-vm.sh');
  await writeFile(
    script,
    `#!/bin/sh
# A runbook's script step: vmdr gives it the VM's DR identity and the run (docs/runbooks.md).
echo "checked $VMDR_VM: hostname $VMDR_HOSTNAME, addresses $VMDR_IPS, point $VMDR_POINT, run $VMDR_RUN_ID ($VMDR_FAILOVER_KIND)"
`,
    { mode: 0o700 },
  );
  const template = parseDocument(await readFile(join(ROOT, 'templates', 'runbooks', 'acme-drill.yaml'), 'utf8'));
  const steps = template.get('steps') as { items: { get(key: string): unknown; setIn(path: string[], value: unknown): void; set(key: string, value: unknown): void }[] };
  for (const item of steps.items) {
    if (item.get('script') !== undefined) item.set('script', template.createNode({ path: script }));
    if (item.get('http') !== undefined) item.setIn(['http', 'url'], TICKETS);
  }
  await writeFile(RUNBOOK(), template.toString(), { mode: 0o600 });
}

/** The ticket system the drill's runbook tells: answers 201 and prints what it was told. */
function ticketSystem(): Promise<ChildProcess> {
  const { port, pathname } = new URL(TICKETS);
  const code = `require('node:http').createServer((req, res) => { let b = ''; req.on('data', (c) => (b += c)); req.on('end', () => { console.log('[dr ticket system] ' + req.method + ' ' + req.url + ' ' + b); res.writeHead(${pathname === '/drills' ? 201 : 404}).end(); }); }).listen(${port}, '127.0.0.1', () => console.log('listening'));`;
  const child = spawn(SITES, ['exec', LAB_HOST.dr, '--', process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => (line === 'listening' ? resolve(child) : process.stdout.write(`${line}\n`)));
    child.once('exit', (c) => reject(new Error(`the ticket system exited with ${c}`)));
  });
}

/** The report page of the DR site's newest run (run ids sort by their start time). */
async function newestReportPage(): Promise<string> {
  const dir = join(HERE, 'dr', 'reports');
  const runs = (await readdir(dir)).filter((n) => n.startsWith('fo-')).sort();
  return join(dir, runs.at(-1)!, 'report.html');
}

/**
 * Each site's config is the lab config with `localSite`, a state file of its own, and endpoints on
 * the sites' WAN addresses: the same protections and plans on both hosts, as an operator would
 * deploy one file with two small differences.
 */
async function writeSiteConfigs(): Promise<void> {
  const template = await readFile(TEMPLATE, 'utf8');
  // 0711: QEMU (libvirt-qemu) walks into the DR site's storage to boot a failed-over VM.
  await mkdir(HERE, { recursive: true, mode: 0o711 });
  await writeRunbook();
  for (const site of Object.keys(LAB_HOST) as SiteName[]) {
    const dir = join(HERE, site);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const doc = parseDocument(template);
    doc.set('localSite', site);
    // The drill runs its runbook; the file is the demo's (writeRunbook).
    doc.set('runbooks', doc.createNode([{ name: 'acme-drill', file: RUNBOOK() }]));
    const drills = doc.get('drills') as { items: { set(key: string, value: unknown): void }[] } | undefined;
    for (const d of drills?.items ?? []) d.set('runbook', 'acme-drill');
    doc.setIn(['state', 'path'], join(dir, 'state.db'));
    const sites = doc.get('sites') as { items: { get(key: string): unknown; set(key: string, value: unknown): void }[] };
    for (const s of sites.items) {
      const name = s.get('name') as SiteName;
      const own = join(HERE, name);
      s.set('endpoint', doc.createNode({ listen: `${WAN[LAB_HOST[name]]}:8443`, credentials: join(own, 'identity') }));
      if (s.get('storage') !== undefined) s.set('storage', join(own, 'replicas'));
    }
    await writeFile(configOf(site), `# Written by the demo from ${TEMPLATE} for the host of site ${site}.\n${doc.toString()}`, { mode: 0o600 });
  }
  // Both configs must be what the product accepts.
  for (const site of Object.keys(LAB_HOST) as SiteName[]) await loadConfig(configOf(site));
}

/**
 * What an earlier run left (its VMs on both hosts, its daemons, its configs, state and replicas)
 * goes first: each run tells the whole story from the start.
 */
async function resetLab(): Promise<void> {
  await exec('pkill', ['-f', '--', `--config ${HERE}/`]).catch(() => undefined);
  const { config } = await loadConfig(TEMPLATE);
  for (const site of Object.keys(LAB_HOST) as SiteName[]) {
    const adapter = openAdapter(labUri(site));
    try {
      const ours = new Set(config.protections.flatMap((p) => [p.source.vm, p.target.vm]));
      const drills = config.protections.map((p) => `${p.target.vm}-drill-`);
      for (const vm of await adapter.listVms()) {
        if (!ours.has(vm.name) && !drills.some((d) => vm.name.startsWith(d))) continue;
        if (vm.powerState !== 'shutoff') await adapter.stop(vm.name, { mode: 'force' });
        await adapter.undefine(vm.name);
      }
    } finally {
      await adapter.close();
    }
  }
  await rm(HERE, { recursive: true, force: true });
}

step('Two sites, two hosts: the lab\'s source and DR hosts, each with its own libvirtd, loopback and storage, joined by a WAN link (198.18.0.1 <-> 198.18.0.2)');
await exec(SITES, ['up']).then(({ stdout }) => process.stdout.write(stdout));
await resetLab();
await writeSiteConfigs();
process.stdout.write(`site configs: ${configOf('prod')} (localSite: prod), ${configOf('dr')} (localSite: dr)\n`);
const { config } = await loadConfig(configOf('dr'));

step('Pairing: each site makes its identity and pins the other\'s certificate (mutual TLS; nothing secret leaves a host)');
for (const site of Object.keys(LAB_HOST) as SiteName[]) await vmdr(site, 'site', 'init');
for (const [here, peer] of [['prod', 'dr'], ['dr', 'prod']] as const) {
  const shown = JSON.parse(await vmdrOutput(peer, 'site', 'show', '--json')) as { certificate: string; fingerprint: string };
  const certFile = join(HERE, here, `${peer}.crt`);
  await writeFile(certFile, shown.certificate, { mode: 0o600 });
  await vmdr(here, 'site', 'pair', peer, '--cert', certFile, '--fingerprint', shown.fingerprint);
}

// Reopened after the source host comes back: its libvirtd is a new process.
let source = openAdapter(labUri('prod'));
const dr = openAdapter(labUri('dr'));
let prodServe: ChildProcess | undefined;
let drServe: ChildProcess | undefined;
try {
  step(`Production, on the source host: the VMs the config protects, running on the isolated network vmdr-lab-prod`);
  for (const p of config.protections) {
    const { ready } = await ensureProductionVm(source, p.source.vm);
    process.stdout.write(`${p.source.vm}: hostname=${ready.hostname} mac=${ready.mac} marker=${ready.marker}\n`);
  }

  step('The DR host: isolated networks of its own, then the pre-staged target VMs (their disks read from the source site through its endpoint)');
  for (const p of config.protections) {
    for (const nic of p.target.nics) await dr.ensureIsolatedNetwork({ name: nic.network, labels: { role: 'dr' } });
  }
  step('Each site\'s `vmdr serve`: one HTTPS endpoint each. The DR site receives replication; the source site answers the DR site\'s failover and failback steps');
  drServe = await serve('dr', '--no-replicate');
  prodServe = await serve('prod', '--no-replicate');
  await vmdr('dr', 'config', 'check');
  await vmdr('dr', 'target', 'provision');

  step('Protect every VM from the source host: the first sync crosses the WAN; holes travel as zero frames');
  for (const p of config.protections) await vmdr('prod', 'protect', p.name);

  const p = config.protections.find((x) => x.name === 'acme-web') ?? config.protections[0]!;
  step(`Change 256 KiB on ${p.source.vm}'s disk while it runs, then sync every VM: only the dirty blocks travel`);
  await exec('virsh', ['-c', labUri('prod'), 'qemu-monitor-command', p.source.vm, '--hmp', 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x5a 48M 256k"']);
  for (const q of config.protections) await vmdr('prod', 'sync', q.name);
  await vmdr('dr', 'points', p.name);
  await vmdr('dr', 'status');

  const plan = config.plans.find((x) => x.name === 'acme-site') ?? config.plans[0]!;
  const drill = config.drills.find((d) => d.plan === plan.name);
  if (drill) {
    step(
      `Drill ${drill.name} of plan ${plan.name} on the DR host, with its runbook: each VM boots its newest point in a bubble network of its own, with its DR identity, ` +
        `is checked healthy; a script checks each web VM, the ticket system (a loopback endpoint on the DR host) is told; the evidence is kept (console, screenshot), ` +
        `everything is removed (sources, replicas and targets untouched), and the signed report is written`,
    );
    const tickets = await ticketSystem();
    try {
      await vmdr('dr', 'drill', 'run', drill.name);
    } finally {
      await stopServe(tickets);
    }
    const page = await newestReportPage();
    process.stdout.write(`The drill's report, one self-contained page: ${page}\n`);
    await vmdr('dr', 'report', 'verify', page);
  } else {
    step(`A drill of plan ${plan.name} on the DR host: each VM boots its newest point in a bubble network of its own, with its DR identity, is checked healthy, then removed (sources, replicas and targets untouched)`);
    await vmdr('dr', 'failover', '--plan', plan.name, '--test');
  }

  // The lab guest has no ACPI daemon: a graceful shutdown is never answered, so it is powered off after the timeout.
  step(`A planned failover of ${p.name}, started on the DR host: the source site shuts its VM down (powered off after 10 s: the lab guest ignores ACPI) and ships the final delta, the DR VM boots it (data-loss window 0)`);
  await vmdr('dr', 'failover', p.name, '--planned', '--shutdown-timeout', '10s');
  step(`Failback of ${p.name}: reverse replication, only the blocks that differ travel back to the source host, once while the DR VM runs and once after it stops; then the source starts`);
  await vmdr('dr', 'failback', p.name, '--shutdown-timeout', '10s');
  await vmdr('prod', 'sync', p.name);
  await vmdr('dr', 'status');

  step(`The source host is lost (its namespace killed outright): an unplanned failover of plan ${plan.name} needs nothing from it`);
  await stopServe(prodServe);
  prodServe = undefined;
  await exec(SITES, ['kill', 'source']);
  await vmdr('dr', 'failover', '--plan', plan.name);
  await vmdr('dr', 'status');

  step('The source host comes back: its daemon learns of the failover at its first answer and fences its VMs (labelled role=fenced, autostart off); a plain start is refused');
  await exec(SITES, ['up']);
  await source.close().catch(() => undefined);
  source = openAdapter(labUri('prod'));
  // With its replication loops: the loop's first question to the DR site is what fences.
  prodServe = await serve('prod');
  for (const q of config.protections) {
    const fenced = await waitForFence(q.source.vm);
    process.stdout.write(`${q.source.vm}: role=${fenced}\n`);
  }
  const refused = await exec('virsh', ['-c', labUri('prod'), 'start', p.source.vm]).then(
    () => 'started (not expected)',
    (err: { stderr?: string }) => (err.stderr ?? '').trim().split('\n').find((l) => l.includes('vmdr:')) ?? String(err),
  );
  process.stdout.write(`[prod]$ virsh start ${p.source.vm}\n${refused}\n`);
  await stopServe(prodServe);
  prodServe = await serve('prod', '--no-replicate');

  step(`Undo it: --revert stops the DR VMs and discards what they wrote, the targets are pre-staged again, the source site lifts its fences and restarts its VMs, replication resumes`);
  await vmdr('dr', 'failover', '--plan', plan.name, '--revert');
  for (const q of config.protections) await vmdr('prod', 'sync', q.name);
  await vmdr('dr', 'status');
} finally {
  await stopServe(prodServe);
  await stopServe(drServe);
  await Promise.allSettled([source.close(), dr.close()]);
}
process.stdout.write(`done. The lab lives in ${LAB_DIR} and ${HERE}; the sites keep running (scripts/lab/sites down).\n`);

/** The fence the source site's daemon puts on `vm` once the DR site tells it of the failover. */
async function waitForFence(vm: string): Promise<string> {
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; ) {
    const role = (await source.getVm(vm)).labels['role'];
    if (role === 'fenced') return role;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`the source site did not fence ${vm} within 120 s`);
}
