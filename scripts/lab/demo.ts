/**
 * The demo: vmdr's main job on the lab, end to end, narrated. Run through ./scripts/demo, which
 * sets the machine up first. It grows with each capability the product gains.
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { applyIdentity } from '../../plugin/failover/identity.js';
import { fileSize, GUEST_READY, waitForSerialLine } from '../../plugin/failover/serial-health.js';
import { baseImage, serialLog } from '../../plugin/replication/layout.js';
import { copyImage } from '../../plugin/replication/qemu-img.js';
import { ensureProductionVm, LAB_DIR } from './production.js';

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

  const p = config.protections.find((x) => x.name === 'acme-web') ?? config.protections[0]!;
  const storage = sites.site(p.target.site).storage!;
  step(`Seed ${p.name}'s replica from its source disk (offline copy; block replication replaces this step)`);
  const source = await sites.adapter(p.source.site);
  const sourceVm = await source.getVm(p.source.vm);
  // The lab guest has no ACPI daemon (see templates/guest/init.sh); its disk is synced after boot.
  await source.stop(sourceVm.name, { mode: 'force' });
  for (const disk of sourceVm.disks.filter((d) => d.device === 'disk' && !d.identitySeed)) {
    await copyImage(disk.path!, baseImage(storage, p.name, disk.target));
    process.stdout.write(`${disk.path} -> ${baseImage(storage, p.name, disk.target)}\n`);
  }
  await ensureProductionVm(source, p.source.vm);

  step(`Boot ${p.target.vm} with its DR identity and read what the guest applied`);
  const dr = await sites.adapter(p.target.site);
  const applied = await applyIdentity(dr, p, storage);
  const consoleLog = serialLog(storage, p.name);
  const from = await fileSize(consoleLog);
  const started = Date.now();
  await dr.start(p.target.vm);
  const ready = await waitForSerialLine({ vm: p.target.vm, file: consoleLog, pattern: GUEST_READY, timeoutMs: 60_000, fromOffset: from });
  process.stdout.write(`${ready[0]}\n(healthy ${((Date.now() - started) / 1000).toFixed(1)} s after start; seed ${applied.seed})\n`);
  await vmdr('status');

  step(`Power ${p.target.vm} off again: it stays pre-staged`);
  await dr.stop(p.target.vm, { mode: 'force' });
  await dr.detachIdentitySeed(p.target.vm);
  await rm(applied.seed, { force: true });
  process.stdout.write(`done. The lab lives in ${LAB_DIR}.\n`);
} finally {
  await sites.close();
}
