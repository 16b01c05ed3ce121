import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../plugin/config/load.js';
import { printJson, run } from '../cli/report.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';

interface CheckOptions extends GlobalOptions {
  file?: string;
}

const check: CommandModule<GlobalOptions, CheckOptions> = {
  command: 'check [file]',
  describe: 'Validate a config file and summarize what it protects',
  builder: (y: Argv<GlobalOptions>) => y.positional('file', { type: 'string', describe: 'Config file (default: --config)' }),
  handler: (argv) =>
    run(argv, async () => {
      const file = argv.file ?? argv.config;
      const { config } = await loadConfig(file);
      const summary = {
        file,
        valid: true,
        sites: config.sites.length,
        tenants: config.tenants.length,
        protections: config.protections.length,
        plans: config.plans.length,
        drills: config.drills.length,
      };
      if (argv.json) return printJson(summary);
      process.stdout.write(
        `${file}: valid: ${summary.sites} sites, ${summary.tenants} tenants, ${summary.protections} protections, ` +
          `${summary.plans} plans, ${summary.drills} drills\n`,
      );
    }),
};

export const configCommand: CommandBody<GlobalOptions> = {
  builder: (y) => y.command(check).demandCommand(1),
  handler: () => undefined,
};
