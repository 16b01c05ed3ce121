import type { Argv } from 'yargs';
import { findProtection } from '../../plugin/protections/find.js';
import { receiverFor } from '../../plugin/replication/sender/connect.js';
import { syncProtection, type SyncResult } from '../../plugin/replication/sync.js';
import { describeSync, reportCycle, sayer } from '../cli/cycles.js';
import { printJson, run } from '../cli/report.js';
import { progressReporter } from '../cli/progress.js';
import type { CommandBody } from './index.js';
import type { GlobalOptions } from './options.js';
import { withReplicationContext } from './replication-context.js';

interface SyncOptions extends GlobalOptions {
  vm: string;
  full: boolean;
  continuous: boolean;
  compression?: 'auto' | 'off';
}

export const syncCommand: CommandBody<SyncOptions> = {
  builder: (y: Argv<GlobalOptions>) =>
    y
      .positional('vm', { type: 'string', demandOption: true, describe: 'Protection or source VM name' })
      .option('full', { type: 'boolean', default: false, describe: 'Ship every byte, not only what changed' })
      .option('continuous', { type: 'boolean', default: false, describe: 'Keep syncing, cycle after cycle, until interrupted' })
      .option('compression', { choices: ['auto', 'off'] as const, describe: "zstd on what compresses (auto) or raw data (off); default: the protection's `compression`" }),
  handler: (argv) =>
    run(argv, () =>
      withReplicationContext(argv.config, async ({ file, config, sites, state }) => {
        const found = findProtection(config, file, argv.vm);
        const protection = argv.compression ? { ...found, compression: argv.compression } : found;
        const receiver = await receiverFor(config, file, protection);
        try {
          if (argv.continuous) {
            const stop = new AbortController();
            const end = () => stop.abort();
            process.once('SIGINT', end).once('SIGTERM', end);
            // Loaded here, not with the command: one sync (the usual) needs no loop.
            const { replicateContinuously } = await import('../../plugin/replication/continuous.js');
            await replicateContinuously(protection, { sites, state, receiver }, {
              signal: stop.signal,
              // Asked for on the command line: back to back, whatever the protection's schedule.
              intervalMs: 0,
              onCycle: (c) => reportCycle(sayer(argv.json), protection, c),
            });
            return;
          }
          const progress = progressReporter({ json: argv.json, label: protection.name });
          let result: SyncResult;
          try {
            result = await syncProtection(protection, { sites, state, receiver }, { full: argv.full, onProgress: progress.onProgress });
          } finally {
            progress.stop();
          }
          if (argv.json) return printJson({ event: 'result', ...result });
          process.stdout.write(`${describeSync(result)}\n`);
        } finally {
          receiver.close();
        }
      }),
    ),
};
