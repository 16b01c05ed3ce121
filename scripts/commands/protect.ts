import type { Argv, CommandModule } from 'yargs';
import { findProtection } from '../../plugin/protections/find.js';
import { receiverFor } from '../../plugin/replication/sender/connect.js';
import { syncProtection } from '../../plugin/replication/sync.js';
import { provisionTargets } from '../../plugin/targets/provision.js';
import { printJson, run } from '../cli/report.js';
import { progressReporter } from '../cli/progress.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';
import { describeSync } from '../cli/cycles.js';

interface ProtectOptions extends GlobalOptions {
  vm: string;
}

export const protectCommand: CommandModule<GlobalOptions, ProtectOptions> = {
  command: 'protect <vm>',
  describe: 'Start protecting a VM: pre-stage its DR target and ship its first recovery point',
  builder: (y: Argv<GlobalOptions>) => y.positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' }),
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
        const protection = findProtection(config, file, argv.vm);
        const [target] = await provisionTargets(config, file, sites, [protection.name], state);
        const receiver = await receiverFor(config, file, protection);
        try {
          const latest = await receiver.latestPoint(protection.name);
          if (latest) {
            const summary = { protection: protection.name, target: target!.vm, action: 'already-protected', point: latest };
            if (argv.json) return printJson({ event: 'result', ...summary });
            return void process.stdout.write(`${protection.name}: already protected; newest recovery point ${latest.id} (${latest.time.toISOString()})\n`);
          }
          const progress = progressReporter({ json: argv.json, label: protection.name });
          try {
            const result = await syncProtection(protection, { sites, state, receiver }, { onProgress: progress.onProgress });
            progress.stop();
            if (argv.json) return printJson({ event: 'result', target: target!.vm, action: 'protected', ...result });
            process.stdout.write(`${protection.name}: target ${target!.vm} ${target!.action}\n${describeSync(result)}\n`);
          } finally {
            progress.stop();
          }
        } finally {
          receiver.close();
        }
      }),
    ),
};
