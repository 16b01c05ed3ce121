import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { provisionTargets, type ProvisionedTarget } from '../../plugin/targets/provision.js';
import { formatBytes, progressReporter } from '../cli/progress.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

interface ProvisionOptions extends GlobalOptions {
  protection: string[];
}

const provision: CommandModule<GlobalOptions, ProvisionOptions> = {
  command: 'provision [protection..]',
  describe: "Pre-stage the target VMs of the config (defined, powered off, their disks the replica), or bring them up to date with their sources' disks",
  builder: (y: Argv<GlobalOptions>) =>
    y.positional('protection', { type: 'string', array: true, default: [], describe: 'Only these protections' }),
  handler: (argv) =>
    run(argv, async () => {
      const { file, config } = await loadConfig(argv.config);
      const sites = new SiteConnections(config, file);
      try {
        // The state file is opened only when a target needs an update: pre-staging needs none.
        const progress = progressReporter({ json: argv.json });
        const results = await provisionTargets(config, file, sites, argv.protection, undefined, { onProgress: progress.onProgress }).finally(() => progress.stop());
        if (argv.json) return printJson(results);
        printTable(
          ['PROTECTION', 'TARGET', 'SITE', 'ACTION', 'DISKS'],
          results.map((r) => [r.protection, r.vm, r.site, describeAction(r), r.disks.map((d) => d.path).join(',')]),
        );
      } finally {
        await sites.close();
      }
    }),
};

/** "defined", "unchanged", or "updated: added vdc, grew vdb to 2.0 GiB, identity seed written". */
function describeAction(r: ProvisionedTarget): string {
  if (r.action !== 'updated') return r.action;
  const changes = r.changes.map((c) => (c.change === 'added' ? `added ${c.disk}` : `grew ${c.disk} to ${formatBytes(c.sizeBytes)}`));
  if (r.identity === 'written') changes.push('identity seed written');
  return `updated: ${changes.join(', ')}`;
}

export const targetCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(provision).demandCommand(1),
  handler: () => undefined,
};
