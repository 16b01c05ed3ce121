import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../plugin/config/load.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { provisionTargets } from '../../plugin/targets/provision.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { GlobalOptions } from './options.js';

interface ProvisionOptions extends GlobalOptions {
  protection: string[];
}

const provision: CommandModule<GlobalOptions, ProvisionOptions> = {
  command: 'provision [protection..]',
  describe: 'Pre-stage the target VMs of the config: defined, powered off, their disks the replica',
  builder: (y: Argv<GlobalOptions>) =>
    y.positional('protection', { type: 'string', array: true, default: [], describe: 'Only these protections' }),
  handler: (argv) =>
    run(argv, async () => {
      const { file, config } = await loadConfig(argv.config);
      const sites = new SiteConnections(config, file);
      try {
        const results = await provisionTargets(config, file, sites, argv.protection);
        if (argv.json) return printJson(results);
        printTable(
          ['PROTECTION', 'TARGET', 'SITE', 'ACTION', 'DISKS'],
          results.map((r) => [r.protection, r.vm, r.site, r.action, r.disks.map((d) => d.path).join(',')]),
        );
      } finally {
        await sites.close();
      }
    }),
};

export const targetCommand: CommandModule<GlobalOptions, GlobalOptions> = {
  command: 'target <command>',
  describe: 'Manage the pre-staged DR target VMs',
  builder: (y) => y.command(provision).demandCommand(1),
  handler: () => undefined,
};
