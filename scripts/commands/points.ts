import type { Argv, CommandModule } from 'yargs';
import { findProtection } from '../../plugin/protections/find.js';
import { listRecoveryPoints } from '../../plugin/replication/points.js';
import { printJson, printTable, run } from '../cli/report.js';
import { formatBytes } from '../cli/progress.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

interface PointsOptions extends GlobalOptions {
  vm: string;
}

export const pointsCommand: CommandModule<GlobalOptions, PointsOptions> = {
  command: 'points <vm>',
  describe: "List a protected VM's recovery points on its DR site, oldest first (asks the site's receiver when run elsewhere)",
  builder: (y: Argv<GlobalOptions>) => y.positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' }),
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
        const protection = findProtection(config, file, argv.vm);
        const points = await listRecoveryPoints({ config, file, sites, state }, protection);
        if (argv.json) return printJson(points);
        if (points.length === 0) return void process.stdout.write(`${protection.name}: no recovery points yet (vmdr protect ${protection.name})\n`);
        printTable(
          ['ID', 'TIME', 'KIND', 'CHECKPOINT', 'SHIPPED', 'IMAGES'],
          points.map((p) => [
            p.id,
            p.time.toISOString(),
            p.kind + (p.pinned ? ' (pinned)' : ''),
            p.checkpoint,
            formatBytes(p.bytesShipped),
            p.disks.map((d) => `${d.disk}=${d.image}`).join(' '),
          ]),
        );
      }),
    ),
};
