import type { CommandModule } from 'yargs';
import { loadConfig } from '../../plugin/config/load.js';
import { protectionStatus } from '../../plugin/protections/status.js';
import { SiteConnections } from '../../plugin/sites/connections.js';
import { printJson, printTable, run } from '../cli/report.js';
import type { GlobalOptions } from './options.js';

export const statusCommand: CommandModule<GlobalOptions, GlobalOptions> = {
  command: 'status',
  describe: 'Show every protection: its source and target VMs and their state',
  handler: (argv) =>
    run(argv, async () => {
      const { file, config } = await loadConfig(argv.config);
      const sites = new SiteConnections(config, file);
      try {
        const rows = await protectionStatus(config, sites);
        if (argv.json) return printJson(rows);
        if (rows.length === 0) return void process.stdout.write(`${file}: no protections\n`);
        printTable(
          ['PROTECTION', 'TENANT', 'SOURCE', 'STATE', 'TARGET', 'STATE', 'RPO'],
          rows.map((r) => [
            r.protection,
            r.tenant ?? '-',
            `${r.source.vm}@${r.source.site}`,
            r.source.state,
            `${r.target.vm}@${r.target.site}`,
            r.target.state,
            `${r.rpoSeconds}s`,
          ]),
        );
      } finally {
        await sites.close();
      }
    }),
};
