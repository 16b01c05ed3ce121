/**
 * The demo: vmdr's main job on the lab, end to end, narrated. Run through ./scripts/demo, which
 * sets the machine up first. It grows with each capability the product gains.
 */
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { ensureProductionVm, LAB_DIR } from './production.js';

const exec = promisify(execFile);
const CONFIG = process.argv[2] ?? 'templates/examples/lab.yaml';
const VMDR = join(import.meta.dirname, '..', 'vmdr.js');

function step(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

function vmdr(...args: string[]): Promise<void> {
  process.stdout.write(`$ vmdr ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VMDR, ...args, '--config', CONFIG], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`vmdr ${args.join(' ')} exited with ${code}`))));
  });
}

const { file, config } = await loadConfig(CONFIG);
const sites = new SiteConnections(config, file);
try {
  step(`Production: the VMs ${file} protects, running on the isolated network vmdr-lab-prod`);
  for (const p of config.protections) {
    const { ready } = await ensureProductionVm(await sites.adapter(p.source.site), p.source.vm);
    process.stdout.write(`${p.source.vm}: hostname=${ready.hostname} mac=${ready.mac} marker=${ready.marker}\n`);
  }

  step('The DR site: isolated networks of its own, then the pre-staged target VMs');
  for (const p of config.protections) {
    const dr = await sites.adapter(p.target.site);
    for (const nic of p.target.nics) await dr.ensureIsolatedNetwork({ name: nic.network, labels: { role: 'dr' } });
  }
  await vmdr('config', 'check');
  await vmdr('target', 'provision');
  await vmdr('status');

  step('The DR receiver: `vmdr serve --no-replicate` in the background (HTTPS on loopback, mutual TLS: one host presents and pins the DR site\'s own certificate)');
  const serve = spawn(process.execPath, [VMDR, 'serve', '--no-replicate', '--config', CONFIG], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    serve.stdout!.setEncoding('utf8').on('data', (text: string) => {
      process.stdout.write(text);
      if (text.includes('ready')) resolve();
    });
    serve.once('exit', (code) => reject(new Error(`vmdr serve exited with ${code}`)));
  });
  try {
    step('Protect every VM: the first sync ships only allocated blocks; holes travel as zero frames');
    for (const p of config.protections) await vmdr('protect', p.name);

    const p = config.protections.find((x) => x.name === 'acme-web') ?? config.protections[0]!;
    step(`Change 256 KiB on ${p.source.vm}'s disk while it runs, then sync every VM: only the dirty blocks travel`);
    await exec('virsh', ['-c', sites.site(p.source.site).uri, 'qemu-monitor-command', p.source.vm, '--hmp',
      'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x5a 48M 256k"']);
    for (const q of config.protections) await vmdr('sync', q.name);
    await vmdr('points', p.name);
    await vmdr('status');

    const plan = config.plans.find((x) => x.name === 'acme-site') ?? config.plans[0]!;
    step(`A drill of plan ${plan.name}: each VM boots its newest point in a bubble network of its own, with its DR identity, is checked healthy, then removed (sources, replicas and targets untouched)`);
    await vmdr('failover', '--plan', plan.name, '--test');

    step(`Production is lost: an unplanned failover of plan ${plan.name}, group after group; --force fences (powers off) the sources, which the lab still runs`);
    await vmdr('failover', '--plan', plan.name, '--force');
    await vmdr('status');

    step(`Undo it: --revert stops the DR VMs and discards what they wrote, the targets are pre-staged again, the sources restart, replication resumes`);
    await vmdr('failover', '--plan', plan.name, '--revert');
    for (const q of config.protections) await vmdr('sync', q.name);
    await vmdr('status');
  } finally {
    serve.kill('SIGTERM');
  }
  process.stdout.write(`done. The lab lives in ${LAB_DIR}.\n`);
} finally {
  await sites.close();
}
